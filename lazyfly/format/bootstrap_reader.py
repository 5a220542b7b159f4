"""Read a bootstrap by offset, verifying only the blocks it touches.

Opening checks the header and the block-digest table (a few KiB even for 100 000 files); each
64 KiB body block is checked against its blake3 the first time a record in it is read. A block that
fails raises Corrupt every time, so tampered bytes are never returned. Works on any buffer: bytes,
or an mmap for a file on disk (`open_bootstrap`).
"""

import mmap
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

from lazyfly.compression import Compressor
from lazyfly.digest import blake3_digest
from lazyfly.errors import Corrupt, NotFound
from lazyfly.format.layout import (
    BLOB,
    BLOB_FLAG_PREFETCH,
    BOOTSTRAP_MAGIC,
    BOOTSTRAP_VERSION,
    CHUNK_REF,
    COMPRESSOR_MASK,
    DIRENT,
    HEADER,
    HEADER_DIGEST_OFFSET,
    HEADER_SIZE,
    INODE,
    PREFETCH,
    ROOT_INO,
    SECTIONS,
    XATTR,
    BlobInfo,
    ChunkRef,
    Inode,
    is_valid_chunk_size,
)

# file offset (u64 at 0) and uncompressed size (u32 at 28) of a chunk ref
_REF_SPAN = struct.Struct("<Q20xI")
_REF_START = struct.Struct("<Q")
_RECORDS = {
    "inodes": INODE,
    "dirents": DIRENT,
    "chunks": CHUNK_REF,
    "xattrs": XATTR,
    "blobs": BLOB,
    "prefetch": PREFETCH,
}


class Bootstrap:
    """A verified, lazily read view of one bootstrap."""

    def __init__(self, buf: bytes | mmap.mmap) -> None:
        self._buf = buf
        if len(buf) < HEADER_SIZE:
            raise Corrupt(f"bootstrap truncated: {len(buf)} bytes, header needs {HEADER_SIZE}")
        fields = HEADER.unpack_from(buf, 0)
        magic, version, header_size, _flags, self.chunk_size, self._block, self.inode_count = fields[:7]
        self.root_ino = fields[7]
        if magic != BOOTSTRAP_MAGIC:
            raise Corrupt("not a lazyfly bootstrap (bad magic)")
        if version != BOOTSTRAP_VERSION or header_size != HEADER_SIZE:
            raise Corrupt(f"unsupported bootstrap version {version}")
        spans = fields[8 : 8 + 2 * len(SECTIONS)]
        digest_offset, block_count, file_size = fields[8 + 2 * len(SECTIONS) :]
        if file_size != len(buf):
            raise Corrupt(f"bootstrap truncated or padded: {len(buf)} bytes, header says {file_size}")
        if digest_offset + 32 * block_count != file_size or self._block <= 0:
            raise Corrupt("bootstrap block-digest table out of bounds")
        self._digests = bytes(buf[digest_offset:file_size])
        stored = bytes(buf[HEADER_DIGEST_OFFSET:HEADER_SIZE])
        if blake3_digest(bytes(buf[:HEADER_DIGEST_OFFSET]) + self._digests) != stored:
            raise Corrupt("bootstrap header checksum mismatch")
        if -(-(digest_offset - HEADER_SIZE) // self._block) != block_count:
            raise Corrupt("bootstrap block count does not match its body")
        self._body_end = digest_offset
        self._sections = {n: (spans[2 * i], spans[2 * i + 1]) for i, n in enumerate(SECTIONS)}
        for name, (off, size) in self._sections.items():
            if off < HEADER_SIZE or off + size > digest_offset:
                raise Corrupt(f"bootstrap section {name} out of bounds")
        if self.inode_count * INODE.size != self._sections["inodes"][1] or self.inode_count < 1:
            raise Corrupt("bootstrap inode count does not match the inode table")
        for name, record in _RECORDS.items():
            if self._sections[name][1] % record.size:
                raise Corrupt(f"bootstrap section {name} holds a partial record")
        if self.root_ino != ROOT_INO or not is_valid_chunk_size(self.chunk_size):
            raise Corrupt("bootstrap header names an invalid root inode or chunk size")
        self._verified = bytearray(block_count)

    # --- verification --------------------------------------------------------------------------

    def _read(self, off: int, size: int) -> bytes:
        first = (off - HEADER_SIZE) // self._block
        last = (off + size - 1 - HEADER_SIZE) // self._block
        for block in range(first, last + 1):
            if not self._verified[block]:
                start = HEADER_SIZE + block * self._block
                data = self._buf[start : min(start + self._block, self._body_end)]
                if blake3_digest(data) != self._digests[32 * block : 32 * block + 32]:
                    raise Corrupt(f"bootstrap block {block} (offset {start}) checksum mismatch")
                self._verified[block] = 1
        return bytes(self._buf[off : off + size])

    def _record(self, section: str, struct_, index: int, count: int | None = None) -> bytes:
        off, size = self._sections[section]
        n = count or 1
        if index < 0 or (index + n) * struct_.size > size:
            raise Corrupt(f"bootstrap {section} record {index} out of bounds")
        return self._read(off + index * struct_.size, n * struct_.size)

    def _string(self, off: int, length: int) -> bytes:
        base, size = self._sections["strings"]
        if off + length > size:
            raise Corrupt("bootstrap string out of bounds")
        return self._read(base + off, length) if length else b""

    def verify_all(self) -> None:
        """Check every block of the body (what `lazyfly check` does)."""
        if self._body_end > HEADER_SIZE:
            self._read(HEADER_SIZE, self._body_end - HEADER_SIZE)

    # --- records -------------------------------------------------------------------------------

    def inode(self, ino: int) -> Inode:
        """Return inode `ino`; raise NotFound for a number outside the table."""
        if not 1 <= ino <= self.inode_count:
            raise NotFound(f"inode {ino} not in bootstrap ({self.inode_count} inodes)")
        f = INODE.unpack(self._record("inodes", INODE, ino - 1))
        return Inode(
            ino=ino, mode=f[0], uid=f[1], gid=f[2], nlink=f[3], size=f[4], blocks=f[5],
            mtime_ns=f[6] * 1_000_000_000 + f[7], rdev=f[9], parent=f[10], first=f[11],
            count=f[12], xattr_first=f[13], xattr_count=f[14], target_off=f[15], target_len=f[16],
        )  # fmt: skip

    def _dirent(self, index: int) -> tuple[bytes, int, int]:
        name_off, name_len, ftype, ino = DIRENT.unpack(self._record("dirents", DIRENT, index))
        return self._string(name_off, name_len), ino, ftype

    def lookup(self, parent: Inode, name: bytes) -> int | None:
        """Return the inode number of `name` in directory `parent`, by binary search."""
        if not stat.S_ISDIR(parent.mode):
            return None
        lo, hi = parent.first, parent.first + parent.count
        while lo < hi:
            mid = (lo + hi) // 2
            entry, ino, _ = self._dirent(mid)
            if entry == name:
                return ino
            if entry < name:
                lo = mid + 1
            else:
                hi = mid
        return None

    def entries(self, parent: Inode, start: int = 0) -> Iterator[tuple[bytes, int, int]]:
        """Yield (name, ino, file type) of `parent`'s entries from index `start`, sorted by name."""
        for i in range(parent.first + start, parent.first + parent.count):
            yield self._dirent(i)

    def chunks(self, inode: Inode, start: int = 0, stop: int | None = None) -> list[ChunkRef]:
        """Return the chunk refs of a regular file, sorted by file offset."""
        if not stat.S_ISREG(inode.mode) or inode.count == 0:
            return []
        stop = inode.count if stop is None else min(stop, inode.count)
        if start >= stop:
            return []
        data = self._record("chunks", CHUNK_REF, inode.first + start, stop - start)
        refs = []
        for f in CHUNK_REF.iter_unpack(data):
            try:
                compressor = Compressor(f[6] & COMPRESSOR_MASK)
            except ValueError:
                raise Corrupt(f"inode {inode.ino}: chunk with unknown compressor") from None
            refs.append(ChunkRef(f[0], f[5], f[1], f[3], f[2], f[4], compressor, f[7]))
        return refs

    def chunks_in_range(self, inode: Inode, offset: int, length: int) -> list[ChunkRef]:
        """Return the chunk refs overlapping [offset, offset+length), found by binary search."""
        if not stat.S_ISREG(inode.mode) or length <= 0:
            return []
        lo, hi = 0, inode.count
        while lo < hi:  # first ref whose end passes offset; only two fields decoded per probe
            mid = (lo + hi) // 2
            file_offset, usize = _REF_SPAN.unpack(self._record("chunks", CHUNK_REF, inode.first + mid)[:32])
            if file_offset + usize <= offset:
                lo = mid + 1
            else:
                hi = mid
        end = offset + length
        hi = lo
        while hi < inode.count:  # last ref that starts before the end
            (file_offset,) = _REF_START.unpack(self._record("chunks", CHUNK_REF, inode.first + hi)[:8])
            if file_offset >= end:
                break
            hi += 1
        return self.chunks(inode, lo, hi)

    def xattrs(self, inode: Inode) -> dict[bytes, bytes]:
        """Return the extended attributes of `inode`."""
        if not inode.xattr_count:
            return {}
        data = self._record("xattrs", XATTR, inode.xattr_first, inode.xattr_count)
        return {self._string(n, nl): self._string(v, vl) for n, nl, v, vl in XATTR.iter_unpack(data)}

    def readlink(self, inode: Inode) -> bytes:
        """Return a symlink's target."""
        return self._string(inode.target_off, inode.target_len)

    def blobs(self) -> list[BlobInfo]:
        """Return the image's data blobs, in blob-index order."""
        off, size = self._sections["blobs"]
        data = self._read(off, size) if size else b""
        return [
            BlobInfo("sha256:" + d.hex(), csize, usize, count, bool(flags & BLOB_FLAG_PREFETCH))
            for d, csize, usize, count, flags in BLOB.iter_unpack(data)
        ]

    def prefetch(self) -> list[int]:
        """Return the inode numbers of the prefetch table, in order."""
        off, size = self._sections["prefetch"]
        return [ino for (ino,) in PREFETCH.iter_unpack(self._read(off, size))] if size else []

    def resolve(self, path: str | bytes) -> int:
        """Return the inode number of an absolute path inside the image (no symlinks followed)."""
        raw = path.encode() if isinstance(path, str) else path
        ino = self.root_ino
        for part in (p for p in raw.split(b"/") if p):
            found = self.lookup(self.inode(ino), part)
            if found is None:
                raise NotFound(f"{raw.decode(errors='replace')} not in image")
            ino = found
        return ino

    def walk(self) -> Iterator[tuple[bytes, Inode]]:
        """Yield (path, inode) for every entry, depth-first, parents before children.

        A directory reached twice, or under a parent it does not record, raises Corrupt: a
        tampered bootstrap must not send a walker round a cycle forever.
        """
        stack = [(b"/", self.inode(self.root_ino))]
        seen_dirs = {self.root_ino}
        while stack:
            path, inode = stack.pop()
            yield path, inode
            if stat.S_ISDIR(inode.mode):
                children = list(self.entries(inode))
                prefix = path if path.endswith(b"/") else path + b"/"
                for name, ino, _ in reversed(children):
                    child = self.inode(ino)
                    if stat.S_ISDIR(child.mode):
                        if ino in seen_dirs or child.parent != inode.ino:
                            raise Corrupt(f"bootstrap directory {ino} makes a cycle under {inode.ino}")
                        seen_dirs.add(ino)
                    stack.append((prefix + name, child))


def open_bootstrap(path: Path) -> Bootstrap:
    """Map the bootstrap file at `path` read-only and return its verified view."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise Corrupt(f"bootstrap {path} is empty")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return Bootstrap(mapped)
    except Corrupt as exc:
        mapped.close()
        raise Corrupt(f"{path}: {exc}") from exc
