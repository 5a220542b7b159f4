"""One mounted image: its verified bootstrap and a reader per data blob; serves file ranges.

Rule: a read never returns bytes that were not verified: every chunk comes from a BlobReader,
which checks blake3 before caching; holes (ranges without a chunk ref) read as zeros.
"""

import stat
from collections.abc import Sequence
from dataclasses import dataclass

from lazyfly.backend.base import BlobBackend
from lazyfly.errors import Corrupt
from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.format.layout import ChunkRef, Inode
from lazyfly.fusefs.blob_reader import BlobReader
from lazyfly.fusefs.reader_pool import ReaderPool

SMALL_READ = 128 << 10  # reads up to this size of cached chunks skip the thread hop


@dataclass
class MountedImage:
    """An image as fusefs serves it, under the name `image_id` in the mount's root."""

    image_id: str
    slot: int
    bootstrap: Bootstrap
    readers: Sequence[BlobReader]
    backend: BlobBackend
    pool: ReaderPool
    reference: str = ""

    async def read(self, inode: Inode, offset: int, size: int) -> bytes:
        """Return up to `size` bytes of regular file `inode` from `offset` (short only at EOF)."""
        if not stat.S_ISREG(inode.mode) or offset >= inode.size or size <= 0:
            return b""
        size = min(size, inode.size - offset)
        refs = self.bootstrap.chunks_in_range(inode, offset, size)
        if size <= SMALL_READ:
            warm = self._read_warm(refs, offset, size)
            if warm is not None:
                return warm
        out = bytearray(size)  # zeros: what holes read as
        by_blob: dict[int, list[ChunkRef]] = {}
        for ref in refs:
            by_blob.setdefault(ref.blob_index, []).append(ref)
        for blob_index, blob_refs in by_blob.items():
            if not 0 <= blob_index < len(self.readers):
                raise Corrupt(f"image {self.image_id}: chunk ref to blob {blob_index}")
            datas = await self.readers[blob_index].read_chunks(blob_refs)
            for ref, data in zip(blob_refs, datas, strict=True):
                _place(out, offset, ref.file_offset, data)
        return bytes(out)

    def _read_warm(self, refs: list[ChunkRef], offset: int, size: int) -> bytes | None:
        """The range from cached chunks only, without leaving this thread; None if one is cold."""
        out = bytearray(size)
        for ref in refs:
            if not 0 <= ref.blob_index < len(self.readers):
                return None  # the general path reports it
            lo = max(offset, ref.file_offset)
            hi = min(offset + size, ref.file_offset + ref.uncompressed_size)
            data = self.readers[ref.blob_index].try_read_cached(ref, lo - ref.file_offset, hi - lo)
            if data is None:
                return None
            out[lo - offset : hi - offset] = data
        return bytes(out)

    async def aclose(self) -> None:
        """Let go of the blob readers and of the backend (each closes with its last user)."""
        for reader in self.readers:
            await self.pool.release(reader)
        await self.pool.release_backend(self.backend)


def _place(out: bytearray, want_start: int, chunk_start: int, data: bytes) -> None:
    """Copy the part of a chunk (file offset `chunk_start`) that overlaps the requested range."""
    lo = max(want_start, chunk_start)
    hi = min(want_start + len(out), chunk_start + len(data))
    if lo < hi:
        out[lo - want_start : hi - want_start] = data[lo - chunk_start : hi - chunk_start]
