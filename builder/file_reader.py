"""Read a file's content out of a local lazyfly image: chunks fetched from blob files, inflated,
verified against their blake3, and holes filled with zeros.

Rule: a chunk whose digest does not match is never returned; Corrupt names the file offset and
the blob.
"""

from collections.abc import Iterator
from typing import BinaryIO

from lazyfly.compression import decompress
from lazyfly.digest import blake3_digest
from lazyfly.errors import Corrupt
from lazyfly.format.layout import ChunkRef, Inode

_ZERO_BLOCK = bytes(1 << 20)


class BlobFiles:
    """Open blob files of one image, by blob index; closes them all on exit."""

    def __init__(self, paths: list[str]) -> None:
        self._paths = paths
        self._files: dict[int, BinaryIO] = {}

    def __enter__(self) -> "BlobFiles":
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._files.values():
            f.close()

    def read_chunk(self, ref: ChunkRef) -> bytes:
        """Return the verified, inflated bytes of `ref`."""
        f = self._files.get(ref.blob_index)
        if f is None:
            f = self._files[ref.blob_index] = open(self._paths[ref.blob_index], "rb")
        f.seek(ref.compressed_offset)
        stored = f.read(ref.compressed_size)
        where = f"blob {ref.blob_index} offset {ref.compressed_offset}"
        if len(stored) != ref.compressed_size:
            raise Corrupt(f"chunk at {where} is truncated")
        data = decompress(stored, ref.compressor, ref.uncompressed_size)
        if blake3_digest(data) != ref.digest:
            raise Corrupt(f"chunk at {where} fails its blake3 digest")
        return data


def file_content(blobs: BlobFiles, inode: Inode, refs: list[ChunkRef]) -> Iterator[bytes]:
    """Yield the bytes of a regular file in order, zeros for its holes."""
    pos = 0
    for ref in refs:
        yield from _zeros(ref.file_offset - pos)
        yield blobs.read_chunk(ref)
        pos = ref.file_offset + ref.uncompressed_size
    yield from _zeros(inode.size - pos)


def _zeros(n: int) -> Iterator[bytes]:
    while n > 0:
        step = min(n, len(_ZERO_BLOCK))
        yield _ZERO_BLOCK[:step]
        n -= step
