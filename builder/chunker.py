"""Cut files into chunks, hash and compress them on every core, dedup, and append to a blob.

The calling thread walks the source and keeps chunks in file order; worker threads do the CPU
work (blake3 and zstd release the GIL). Chunks of a tar stream arrive as bytes; chunks of files
on disk travel as (path, offset, length) and the workers read them, so reads overlap. Rules:
- an all-zero chunk is a hole: no bytes stored, no chunk ref (found by comparing its blake3 with
  the digest of zeros, which costs nothing extra);
- a chunk whose digest is already in the index (this image, an earlier layer, or a chunk
  dictionary) is referenced, not stored again;
- chunks travel to the workers in batches of up to BATCH_BYTES; at most `window` batches are
  in flight, which bounds memory to window × (BATCH_BYTES + chunk size);
- a chunk the prefetch list asks for is stored in the prefetch blob (once; again there if an
  earlier file or the chunk dictionary holds it elsewhere, so that the prefetch blob holds all
  the list asks for), every other one in the current layer's blob (prefetch_placement.py).
"""

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from lazyfly.builder.blob_writer import BlobHandle, BlobWriter, StoredChunk
from lazyfly.builder.chunk_work import FileRange, Prepared, prepare_buffers, prepare_file_ranges, read_range
from lazyfly.builder.prefetch_placement import PrefetchPlacement, wanted
from lazyfly.builder.tree import Node
from lazyfly.compression import Compressor, compress
from lazyfly.prefetch_list import PrefetchEntry
from lazyfly.progress import NullProgress, ProgressSink

ChunkIndex = dict[bytes, StoredChunk]
BATCH_BYTES = 4 << 20
BATCH_CHUNKS = 256


@dataclass
class ChunkStats:
    """What the chunker saw: every chunk, and how many were holes, duplicates or stored."""

    chunks: int = 0
    holes: int = 0
    deduplicated: int = 0
    stored: int = 0
    bytes_in: int = 0
    bytes_stored: int = 0


_Item = tuple[Node, int, "bytes | FileRange", bool]  # node, offset, source, for the prefetch blob


class Chunker:
    """A content sink that turns file bytes into chunk refs stored in the current blob."""

    def __init__(
        self,
        chunk_size: int,
        compressor: Compressor,
        pool: ThreadPoolExecutor,
        index: ChunkIndex,
        progress: ProgressSink | None = None,
        prefetch: tuple[PrefetchPlacement, BlobWriter] | None = None,
    ) -> None:
        self.chunk_size = chunk_size
        self.compressor = compressor
        self.pool = pool
        self.index = index
        self.stats = ChunkStats()
        self.progress = progress or NullProgress()
        self.window = 4 * (os.cpu_count() or 2)
        self._writer: BlobWriter | None = None
        self._placement, self._prefetch_writer = prefetch or (None, None)
        self._prefetch_index: ChunkIndex = {}  # the chunks stored in the prefetch blob
        self._batch: list[_Item] = []
        self._batch_bytes = 0
        self._pending: deque[tuple[list[_Item], Future[list[Prepared]]]] = deque()

    def start_blob(self, writer: BlobWriter) -> None:
        """Store new chunks in `writer` from now on."""
        self._writer = writer

    def finish_blob(self) -> BlobHandle:
        """Drain in-flight chunks and finish the current blob."""
        self._submit()
        self._drain(0)
        assert self._writer is not None
        handle = self._writer.finish()
        self._writer = None
        return handle

    def finish_prefetch_blob(self) -> BlobHandle | None:
        """Finish the prefetch blob once every layer is finished; None if it holds no chunk
        (its file is deleted)."""
        writer, self._prefetch_writer = self._prefetch_writer, None
        if writer is None:
            return None
        if not writer.chunk_count:
            writer.abort()
            return None
        return writer.finish()

    def abort(self) -> None:
        """Drop in-flight work and delete the partial blobs."""
        for _, fut in self._pending:
            fut.cancel()
        self._pending.clear()
        self._batch.clear()
        for writer in (self._writer, self._prefetch_writer):
            if writer is not None:
                writer.abort()
        self._writer = self._prefetch_writer = None

    def add_file(self, node: Node, stream: BinaryIO, size: int, name: bytes) -> None:
        """Read `size` bytes of `stream` as chunks of `node`, the file at image path `name`."""
        listed = self._listed(name)
        for offset in range(0, size, self.chunk_size):
            length = min(self.chunk_size, size - offset)
            self._add(node, offset, _read_exactly(stream, length), wanted(listed, offset, length))

    def add_path(self, node: Node, path: bytes, size: int, name: bytes) -> None:
        """Chunk the file at `path` (`size` bytes), the file at image path `name`; worker
        threads read it."""
        listed = self._listed(name)
        for offset in range(0, size, self.chunk_size):
            length = min(self.chunk_size, size - offset)
            self._add(node, offset, (path, offset, length), wanted(listed, offset, length))

    def _listed(self, name: bytes) -> list[PrefetchEntry]:
        return self._placement.entries_for(name) if self._placement is not None else []

    def _add(self, node: Node, offset: int, source: "bytes | FileRange", prefetch: bool) -> None:
        if self._batch and type(self._batch[-1][2]) is not type(source):
            self._submit()  # a batch holds one kind of source
        self._batch.append((node, offset, source, prefetch))
        self._batch_bytes += len(source) if isinstance(source, bytes) else source[2]
        # Small files travel in batches: one pool task per chunk would spend more time in the
        # executor (holding the GIL) than in zstd.
        if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_CHUNKS:
            self._submit()

    def _submit(self) -> None:
        if not self._batch:
            return
        batch = self._batch
        sources = [src for _, _, src, _ in batch]
        if isinstance(sources[0], bytes):
            fut = self.pool.submit(prepare_buffers, sources, self.compressor, self.index)
        else:
            fut = self.pool.submit(prepare_file_ranges, sources, self.compressor)
        self._pending.append((batch, fut))
        self._batch = []
        self._batch_bytes = 0
        self._drain(self.window)

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            batch, fut = self._pending.popleft()
            for item, prepared in zip(batch, fut.result(), strict=True):
                self._consume(item, prepared)

    def _consume(self, item: _Item, p: Prepared) -> None:
        node, offset, source, prefetch = item
        stats = self.stats
        stats.chunks += 1
        stats.bytes_in += p.size
        self.progress.advance(p.size)
        if p.hole:
            stats.holes += 1
            return
        known = (self._prefetch_index if prefetch else self.index).get(p.digest)
        if known is not None:
            stats.deduplicated += 1
            node.chunks.append((offset, known))
            return
        stored, compressor = p.stored, p.compressor
        if stored is None:
            # A worker skips compression only for digests already in the index: a listed chunk
            # stored elsewhere before, to be stored again in the prefetch blob.
            data = source if isinstance(source, bytes) else read_range(*source)
            stored, compressor = compress(data, self.compressor)
        writer = self._prefetch_writer if prefetch else self._writer
        assert writer is not None
        chunk = writer.append(stored, p.size, compressor, p.digest)
        self.index.setdefault(p.digest, chunk)
        if prefetch:
            self._prefetch_index[p.digest] = chunk
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
