"""AccessLog: which chunks of which files an image's readers read, for `lazyfly accessed`.

Recorded per read on the hot path, so it only adds chunk indexes to a set per inode; turning them
into a prefetch list (lazyfly/prefetch_list.py) is done when asked. Files are listed in the order
first read; a file read in every chunk is listed whole, another with the byte ranges of the chunks
read (a mapped shared library, of which a program touches a few pages), so that the image built
with that list prefetches no more than the workload read.
"""

import os
from collections.abc import Iterator

from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.prefetch_list import PrefetchEntry, Range


class AccessLog:
    """Chunk indexes read, per inode, in first-read order of the inodes."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self._read: dict[int, set[int]] = {}

    def record(self, ino: int, offset: int, size: int) -> None:
        """Note a read of `size` > 0 bytes of inode `ino` from `offset`."""
        first, last = offset // self.chunk_size, (offset + size - 1) // self.chunk_size
        chunks = self._read.get(ino)
        if chunks is None:
            chunks = self._read[ino] = set()
        if first == last:
            chunks.add(first)
        else:
            chunks.update(range(first, last + 1))

    def entries(self, bootstrap: Bootstrap) -> list[PrefetchEntry]:
        """The files read so far as prefetch-list entries, one per inode (its first path)."""
        paths: dict[int, str] = {}
        for path, inode in bootstrap.walk():
            if inode.ino in self._read and inode.ino not in paths:
                paths[inode.ino] = os.fsdecode(path)
        out = []
        for ino, chunks in list(self._read.items()):
            if ino in paths:
                size = bootstrap.inode(ino).size
                whole = len(chunks) >= -(-size // self.chunk_size)
                out.append(PrefetchEntry(paths[ino], None if whole else tuple(self._ranges(chunks, size))))
        return out

    def _ranges(self, chunks: set[int], size: int) -> Iterator[Range]:
        """Byte ranges of runs of consecutive chunk indexes, the last cut at the file's end."""
        ordered = sorted(chunks)
        start = prev = ordered[0]
        for index in [*ordered[1:], None]:
            if index is not None and index == prev + 1:
                prev = index
                continue
            begin = start * self.chunk_size
            yield begin, min(size, (prev + 1) * self.chunk_size) - begin
            if index is not None:
                start = prev = index
