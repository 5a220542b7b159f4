"""Write one data blob: stored chunks back to back, then the chunk table and its tail.

The OCI digest (sha256 of every byte) is computed while writing, so the blob is never re-read.
The writer only appends to a temporary file; naming it by digest is the image writer's job.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from lazyfly.compression import Compressor
from lazyfly.format.chunk_table import encode_table
from lazyfly.format.layout import ChunkEntry


@dataclass(eq=False)
class BlobHandle:
    """A data blob the image refers to: one being written, a finished one, or a dictionary's."""

    path: Path | None
    digest: str = ""
    compressed_size: int = 0
    uncompressed_size: int = 0
    chunk_count: int = 0
    from_dictionary: bool = False


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A unique chunk and the blob that holds it."""

    blob: BlobHandle
    entry: ChunkEntry


class BlobWriter:
    """Appends chunks to the blob file at `path`."""

    def __init__(self, path: Path) -> None:
        self.handle = BlobHandle(path=path)
        self._file = open(path, "wb")
        self._sha = hashlib.sha256()
        self._entries: list[ChunkEntry] = []
        self._coff = 0
        self._uoff = 0

    def append(self, stored: bytes, size: int, compressor: Compressor, digest: bytes) -> StoredChunk:
        """Write one chunk's stored bytes and return where it lives."""
        entry = ChunkEntry(self._uoff, self._coff, size, len(stored), compressor, digest)
        self._write(stored)
        self._coff += len(stored)
        self._uoff += size
        self._entries.append(entry)
        return StoredChunk(self.handle, entry)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha.update(data)

    def finish(self) -> BlobHandle:
        """Append the table and tail, flush to disk, and return the finished handle."""
        self._write(encode_table(self._entries, self._coff))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        h = self.handle
        h.digest = "sha256:" + self._sha.hexdigest()
        h.compressed_size = self._file_size()
        h.uncompressed_size = self._uoff
        h.chunk_count = len(self._entries)
        return h

    def abort(self) -> None:
        """Close and delete the partial blob."""
        self._file.close()
        if self.handle.path is not None:
            self.handle.path.unlink(missing_ok=True)

    def _file_size(self) -> int:
        assert self.handle.path is not None
        return self.handle.path.stat().st_size
