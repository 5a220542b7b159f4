"""Write one data blob: stored chunks back to back, then the chunk table and its tail.

The OCI digest (sha256 of every byte) is computed while writing, so the blob is never re-read.
The writer only appends to a temporary file; naming it by digest is the image writer's job.
"""

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lazyfly.compression import Compressor
from lazyfly.format.chunk_table import encode_table
from lazyfly.format.layout import UNCOMPRESSED_ALIGNMENT, ChunkEntry

WRITE_BUFFER = 4 << 20
WRITE_QUEUE = 4
IOV_MAX = 1024


@dataclass(eq=False)
class BlobHandle:
    """A data blob the image refers to: one being written, a finished one, or a dictionary's."""

    path: Path | None
    digest: str = ""
    compressed_size: int = 0
    uncompressed_size: int = 0
    chunk_count: int = 0
    from_dictionary: bool = False
    prefetch: bool = False  # holds the chunks the prefetch list asks for (prefetch_placement.py)


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A unique chunk and the blob that holds it."""

    blob: BlobHandle
    entry: ChunkEntry


class BlobWriter:
    """Appends chunks to the blob file at `path`.

    Writing and hashing run in one background thread of the writer's own, in order, so the
    thread that chunks never waits for the disk or for sha256; at most WRITE_QUEUE buffers are
    queued, and a write error (a full disk) surfaces at the next append or at finish.
    """

    def __init__(self, path: Path, *, prefetch: bool = False) -> None:
        self.handle = BlobHandle(path=path, prefetch=prefetch)
        self._file = open(path, "wb", buffering=0)
        self._sha = hashlib.sha256()
        self._entries: list[ChunkEntry] = []
        self._coff = 0
        self._uoff = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._io = ThreadPoolExecutor(1, thread_name_prefix="blob-write")
        self._queued: deque[Future[None]] = deque()

    def append(self, stored: bytes, size: int, compressor: Compressor, digest: bytes) -> StoredChunk:
        """Write one chunk's stored bytes and return where it lives."""
        entry = ChunkEntry(self._uoff, self._coff, size, len(stored), compressor, digest)
        self._buffer.append(stored)
        self._buffered += len(stored)
        if self._buffered >= WRITE_BUFFER:
            self._flush_buffer()
        self._coff += len(stored)
        # Each chunk starts on a 4 KiB boundary of the uncompressed space: a node's cache file
        # then writes and maps whole pages, and a chunk is named by its first page.
        self._uoff += -(-size // UNCOMPRESSED_ALIGNMENT) * UNCOMPRESSED_ALIGNMENT
        self._entries.append(entry)
        return StoredChunk(self.handle, entry)

    @property
    def chunk_count(self) -> int:
        """Chunks appended so far."""
        return len(self._entries)

    def _flush_buffer(self) -> None:
        parts, self._buffer, self._buffered = self._buffer, [], 0
        self._queued.append(self._io.submit(self._write, parts))
        while len(self._queued) > WRITE_QUEUE:
            self._queued.popleft().result()

    def _write(self, parts: list[bytes]) -> None:
        _write_all(self._file.fileno(), parts)
        for data in parts:
            self._sha.update(data)

    def finish(self) -> BlobHandle:
        """Append the table and tail, flush to disk, and return the finished handle."""
        self._buffer.append(encode_table(self._entries, self._coff))
        self._flush_buffer()
        while self._queued:
            self._queued.popleft().result()
        self._io.shutdown()
        os.fsync(self._file.fileno())
        self._file.close()
        h = self.handle
        h.digest = "sha256:" + self._sha.hexdigest()
        h.compressed_size = self._file_size()
        h.uncompressed_size = (
            self._entries[-1].uncompressed_offset + self._entries[-1].uncompressed_size
            if self._entries
            else 0
        )
        h.chunk_count = len(self._entries)
        return h

    def abort(self) -> None:
        """Stop writing, close and delete the partial blob."""
        self._io.shutdown(cancel_futures=True)
        self._file.close()
        if self.handle.path is not None:
            self.handle.path.unlink(missing_ok=True)

    def _file_size(self) -> int:
        assert self.handle.path is not None
        return self.handle.path.stat().st_size


def _write_all(fd: int, parts: list[bytes]) -> None:
    """writev every part, resuming after short writes, IOV_MAX parts at a time."""
    views = [memoryview(p) for p in parts if p]
    while views:
        batch = views[:IOV_MAX]
        written = os.writev(fd, batch)
        while written:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0] = views[0][written:]
                written = 0
