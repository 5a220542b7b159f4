"""Decoded inode records and chunk tables of recently read files, so a read decodes nothing twice.

Every FUSE request names an inode, and every read needs the chunk refs of its range. The bootstrap
answers both by decoding fixed-size records (and checking their block's digest the first time),
which costs tens of microseconds per request: as much as copying a 64 KiB range from the cache.
Sequential reads ask for the same inode hundreds of times, so its record and its chunk table are
kept decoded here, and a range's refs are found by bisection.

Rules:
- The bootstrap stays the only source: entries are decoded from it on first use and never
  changed; an image never changes, so they never go stale.
- At most `max_inodes` inode records and `max_files` chunk tables are kept, the least recently
  used dropped first. A file with more than `max_refs` refs is not kept: its reads use the
  bootstrap's own binary search, so memory stays bounded whatever the image holds.
- Errors are the bootstrap's (NotFound, Corrupt), raised on the access that decodes.
"""

import bisect
import stat

from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.format.layout import ChunkRef, Inode
from lazyfly.fusefs.lru import Lru

DEFAULT_MAX_INODES = 4096
DEFAULT_MAX_FILES = 64
DEFAULT_MAX_REFS = 1 << 16


class _ChunkTable:
    """One file's refs in file-offset order, with their start offsets for bisection."""

    __slots__ = ("refs", "starts")

    def __init__(self, refs: list[ChunkRef]) -> None:
        self.refs = refs
        self.starts = [ref.file_offset for ref in refs]

    def in_range(self, offset: int, length: int) -> list[ChunkRef]:
        refs = self.refs
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        if i < len(refs) and refs[i].file_offset + refs[i].uncompressed_size <= offset:
            i += 1  # the ref before `offset` ends before it (a hole follows)
        end = offset + length
        j = bisect.bisect_left(self.starts, end, lo=i)
        return refs[i:j]


class MetadataCache:
    """Decoded records of one image's bootstrap (see the module rules)."""

    def __init__(
        self,
        bootstrap: Bootstrap,
        *,
        max_inodes: int = DEFAULT_MAX_INODES,
        max_files: int = DEFAULT_MAX_FILES,
        max_refs: int = DEFAULT_MAX_REFS,
    ) -> None:
        self.bootstrap = bootstrap
        self.max_refs = max_refs
        self._inodes: Lru[int, Inode] = Lru(max_inodes)
        self._tables: Lru[int, _ChunkTable] = Lru(max_files)

    def inode(self, ino: int) -> Inode:
        """Inode `ino` (NotFound outside the table)."""
        return self._inodes.get(ino) or self._inodes.put(ino, self.bootstrap.inode(ino))

    def chunks_in_range(self, inode: Inode, offset: int, length: int) -> list[ChunkRef]:
        """The refs of regular file `inode` overlapping [offset, offset + length), in file order."""
        if not stat.S_ISREG(inode.mode) or length <= 0:
            return []
        table = self._tables.get(inode.ino)
        if table is None:
            if inode.count > self.max_refs:
                return self.bootstrap.chunks_in_range(inode, offset, length)
            table = self._tables.put(inode.ino, _ChunkTable(self.bootstrap.chunks(inode)))
        return table.in_range(offset, length)
