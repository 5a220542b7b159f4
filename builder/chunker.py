"""Cut files into chunks, hash and compress them on every core, dedup, and append to a blob.

The main thread reads files and keeps chunks in file order; worker threads compute blake3 and
compress (both release the GIL). Rules:
- an all-zero chunk is a hole: no bytes stored, no chunk ref (found by comparing its blake3 with
  the digest of zeros, which costs nothing extra);
- a chunk whose digest is already in the index (this image, an earlier layer, or a chunk
  dictionary) is referenced, not stored again;
- at most `window` chunks are in flight, which bounds memory to window × chunk size.
"""

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import BinaryIO

from lazyfly.builder.blob_writer import BlobHandle, BlobWriter, StoredChunk
from lazyfly.builder.tree import Node
from lazyfly.compression import Compressor, compress
from lazyfly.digest import blake3_digest
from lazyfly.progress import NullProgress, ProgressSink

ChunkIndex = dict[bytes, StoredChunk]


@cache
def _zero_digest(size: int) -> bytes:
    return blake3_digest(bytes(size))


@dataclass
class ChunkStats:
    """What the chunker saw: every chunk, and how many were holes, duplicates or stored."""

    chunks: int = 0
    holes: int = 0
    deduplicated: int = 0
    stored: int = 0
    bytes_in: int = 0
    bytes_stored: int = 0


@dataclass(slots=True)
class _Prepared:
    digest: bytes
    hole: bool
    stored: bytes | None
    compressor: Compressor


class Chunker:
    """A content sink that turns file bytes into chunk refs stored in the current blob."""

    def __init__(
        self,
        chunk_size: int,
        compressor: Compressor,
        pool: ThreadPoolExecutor,
        index: ChunkIndex,
        progress: ProgressSink | None = None,
    ) -> None:
        self.chunk_size = chunk_size
        self.compressor = compressor
        self.pool = pool
        self.index = index
        self.stats = ChunkStats()
        self.progress = progress or NullProgress()
        self.window = 4 * (os.cpu_count() or 2)
        self._writer: BlobWriter | None = None
        self._pending: deque[tuple[Node, int, bytes, Future[_Prepared]]] = deque()

    def start_blob(self, writer: BlobWriter) -> None:
        """Store new chunks in `writer` from now on."""
        self._writer = writer

    def finish_blob(self) -> BlobHandle:
        """Drain in-flight chunks and finish the current blob."""
        self._drain(0)
        assert self._writer is not None
        handle = self._writer.finish()
        self._writer = None
        return handle

    def abort(self) -> None:
        """Drop in-flight work and delete the partial blob."""
        for *_, fut in self._pending:
            fut.cancel()
        self._pending.clear()
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def add_file(self, node: Node, stream: BinaryIO, size: int) -> None:
        """Read `size` bytes of `stream` as chunks of `node`."""
        offset = 0
        while offset < size:
            want = min(self.chunk_size, size - offset)
            data = _read_exactly(stream, want)
            fut = self.pool.submit(self._prepare, data)
            self._pending.append((node, offset, data, fut))
            offset += want
            self._drain(self.window)

    def _prepare(self, data: bytes) -> _Prepared:
        digest = blake3_digest(data)
        if digest == _zero_digest(len(data)):
            return _Prepared(digest, True, None, Compressor.NONE)
        if digest in self.index:
            return _Prepared(digest, False, None, Compressor.NONE)
        stored, used = compress(data, self.compressor)
        return _Prepared(digest, False, stored, used)

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            node, offset, data, fut = self._pending.popleft()
            prepared = fut.result()
            self._consume(node, offset, data, prepared)

    def _consume(self, node: Node, offset: int, data: bytes, p: _Prepared) -> None:
        stats = self.stats
        stats.chunks += 1
        stats.bytes_in += len(data)
        self.progress.advance(len(data))
        if p.hole:
            stats.holes += 1
            return
        known = self.index.get(p.digest)
        if known is not None:
            stats.deduplicated += 1
            node.chunks.append((offset, known))
            return
        stored, used = (p.stored, p.compressor) if p.stored is not None else compress(data, self.compressor)
        assert self._writer is not None
        chunk = self._writer.append(stored, len(data), used, p.digest)
        self.index[p.digest] = chunk
        stats.stored += 1
        stats.bytes_stored += len(stored)
        node.chunks.append((offset, chunk))


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = stream.read(size - got)
        if not more:
            raise EOFError(f"content ends {size - got} bytes early")
        parts.append(more)
        got += len(more)
    return b"".join(parts)
