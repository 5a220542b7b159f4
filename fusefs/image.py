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


@dataclass
class MountedImage:
    """An image as fusefs serves it, under the name `image_id` in the mount's root."""

    image_id: str
    slot: int
    bootstrap: Bootstrap
    readers: Sequence[BlobReader]
    backend: BlobBackend
    reference: str = ""

    async def read(self, inode: Inode, offset: int, size: int) -> bytes:
        """Return up to `size` bytes of regular file `inode` from `offset` (short only at EOF)."""
        if not stat.S_ISREG(inode.mode) or offset >= inode.size or size <= 0:
            return b""
        size = min(size, inode.size - offset)
        refs = self.bootstrap.chunks_in_range(inode, offset, size)
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

    async def aclose(self) -> None:
        """Close every blob reader, then the backend they share."""
        for reader in self.readers:
            await reader.aclose()
        await self.backend.aclose()


def _place(out: bytearray, want_start: int, chunk_start: int, data: bytes) -> None:
    """Copy the part of a chunk (file offset `chunk_start`) that overlaps the requested range."""
    lo = max(want_start, chunk_start)
    hi = min(want_start + len(out), chunk_start + len(data))
    if lo < hi:
        out[lo - want_start : hi - want_start] = data[lo - chunk_start : hi - chunk_start]
