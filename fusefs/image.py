"""One mounted image: its verified bootstrap and a reader per data blob; serves file ranges.

Rules:
- Rule 1: a read never returns bytes that were not verified: every chunk comes from a BlobReader,
  which checks blake3 before caching; holes (ranges without a chunk ref) read as zeros.
- Rule 2 (cheap hits): a range whose chunks are all cached is served on the event loop, with no
  thread hop; when it lies in one contiguous span of one cache file (a file's chunks sit side by
  side in its blob) it is one `read_span` of that cache file, whose bytes are the answer (a view
  of the mapped file for a sequential reader, else one pread: chunk_cache.py); else the spans are
  read into one zeroed buffer. Inode records and chunk tables come decoded from the
  MetadataCache.
- Rule 3 (no copy of a lone chunk): a range whose chunks did not reach the cache (Rule 5) is
  answered with a view of the chunk's bytes when it lies in one chunk; ranges over several chunks
  are assembled in one buffer, returned as it is.
- Rule 4 (read-ahead): every read of a regular file is reported to the image's ReadAhead
  (read_ahead.py) before it is served; a range it asks for is split per blob into runs of chunks
  neither cached nor in flight, and queued for its workers.
- Rule 5 (fetched, then read as cached): once the missing chunks of a range are fetched (or
  fetched by someone else while it waited), the range is served from the cache files as in Rule
  2, so a cold sequential reader gets the same views as a warm one, which keep one request's
  pages mapped. Only chunks that did not reach the cache (a full disk) are served from the bytes
  the fetch returned.
"""

import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from lazyfly.backend.base import BlobBackend
from lazyfly.errors import Corrupt
from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.format.layout import ChunkRef, Inode
from lazyfly.fusefs.access_log import AccessLog
from lazyfly.fusefs.blob_reader import BlobReader, Chunk, plan_runs
from lazyfly.fusefs.metadata_cache import MetadataCache
from lazyfly.fusefs.read_ahead import ReadAhead
from lazyfly.fusefs.reader_pool import ReaderPool

NEIGHBOURS = 64  # inodes looked at behind a miss for chunks that share its range request
NEIGHBOUR_WINDOW = 64 << 10  # compressed bytes of other files that ride along with a miss
_Slice = tuple[BlobReader, int, int, int]  # reader, offset in its cache file, offset in out, length


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
    read_amplify: int = 0
    read_ahead: ReadAhead = field(default_factory=ReadAhead)
    manifest_digest: str = ""  # names the bootstrap's file in the cache (image_loader.py)
    metadata: MetadataCache = field(init=False)
    accessed: AccessLog = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = MetadataCache(self.bootstrap)
        self.accessed = AccessLog(self.bootstrap.chunk_size)

    async def read(self, inode: Inode, offset: int, size: int) -> bytes | bytearray | memoryview:
        """Return up to `size` bytes of regular file `inode` from `offset` (short only at EOF)."""
        if not stat.S_ISREG(inode.mode) or offset >= inode.size or size <= 0:
            return b""
        size = min(size, inode.size - offset)
        self.accessed.record(inode.ino, offset, size)
        refs = self.metadata.chunks_in_range(inode, offset, size)
        ahead = self.read_ahead.on_read(inode.ino, offset, size, inode.size)
        if ahead is not None:
            self._queue_read_ahead(inode, *ahead)
        slices = self._cached_slices(refs, offset, size)
        if slices is not None:
            # Rule 2: reading the local cache file here (at most 1 MiB, the largest FUSE request)
            # costs less than a hop to a worker thread, which measured at half the throughput.
            return _read_slices(slices, size)
        return await self._read_missing(inode, refs, offset, size)

    async def _read_missing(
        self, inode: Inode, refs: list[ChunkRef], offset: int, size: int
    ) -> bytes | bytearray | memoryview:
        """The range when some of its chunks are not cached: through the readers (Rules 1, 3)."""
        for ref in refs:
            if not 0 <= ref.blob_index < len(self.readers):
                raise Corrupt(f"image {self.image_id}: chunk ref to blob {ref.blob_index}")
        extra = self._amplified(inode, refs, offset + size)
        by_blob: dict[int, list[tuple[ChunkRef, bool]]] = {}
        for ref, wanted in [*((ref, True) for ref in refs), *((ref, False) for ref in extra)]:
            by_blob.setdefault(ref.blob_index, []).append((ref, wanted))
        found: list[tuple[ChunkRef, Chunk]] = []
        for blob_index, entries in by_blob.items():
            datas = await self.readers[blob_index].read_chunks([ref for ref, _ in entries])
            found += [(ref, data) for (ref, wanted), data in zip(entries, datas, strict=True) if wanted]
        slices = self._cached_slices(refs, offset, size, count_hits=False)
        if slices is not None:
            return _read_slices(slices, size)  # Rule 5
        return _assemble(found, offset, size)

    def _queue_read_ahead(self, inode: Inode, start: int, stop: int) -> None:
        """Rule 4: queue the chunks of [start, stop) of `inode` that are neither cached nor in flight."""
        by_blob: dict[int, list[ChunkRef]] = {}
        for ref in self.metadata.chunks_in_range(inode, start, stop - start):
            if not 0 <= ref.blob_index < len(self.readers):
                continue
            try:
                if not self.readers[ref.blob_index].busy(ref):
                    by_blob.setdefault(ref.blob_index, []).append(ref)
            except Corrupt:
                continue  # a bad ref: the read that reaches it reports it
        for blob_index, wanted in by_blob.items():
            reader = self.readers[blob_index]
            for run in plan_runs(wanted, self.read_ahead.policy.run_limit, reader.merge_gap):
                if not self.read_ahead.submit(reader, blob_index, run):
                    return

    def _amplified(self, inode: Inode, refs: list[ChunkRef], end: int) -> list[ChunkRef]:
        """Chunks that ride along with a miss: those lying in its blob right behind the last
        chunk read, that are not cached yet: the file's own up to `read_amplify` compressed bytes,
        other files' up to NEIGHBOUR_WINDOW.

        A registry answers one range request in about the time it sends a few MiB, so a cold
        reader is served far faster by one large request than by many chunk-sized ones. The
        builder writes files in inode order, so the chunks behind a miss are the file's next
        ones, then the next files' (a package's other modules, a library's next pages); they
        land in the cache for the reads that follow. Only chunks of the same blob inside the
        window are taken, so the extra bytes always join the miss's range request. The window
        for other files is small: many of them are never read (a package's sources beside the
        compiled modules that are), and every byte of theirs is one more to download.
        """
        if self.read_amplify <= 0 or not refs:
            return []
        last = max(refs, key=lambda ref: ref.compressed_offset)
        reader = self.readers[last.blob_index]
        start = last.compressed_offset + last.compressed_size
        own_limit = start + self.read_amplify
        neighbour_limit = start + min(self.read_amplify, NEIGHBOUR_WINDOW)
        extra: list[ChunkRef] = []
        for ref, own in self._chunks_behind(inode, end):
            if ref.compressed_offset >= (own_limit if own else neighbour_limit):
                if own:
                    continue
                break
            if ref.blob_index == last.blob_index and ref.compressed_offset >= start:
                if not reader.cache.is_ready(ref.uncompressed_offset):
                    extra.append(ref)
        return extra

    def _chunks_behind(self, inode: Inode, end: int) -> Iterator[tuple[ChunkRef, bool]]:
        """The file's chunks from `end` on (own), then those of the next inodes (at most
        NEIGHBOURS)."""
        if end < inode.size:
            for ref in self.metadata.chunks_in_range(inode, end, min(inode.size - end, self.read_amplify)):
                yield ref, True
        last = min(self.bootstrap.inode_count, inode.ino + NEIGHBOURS)
        for ino in range(inode.ino + 1, last + 1):
            neighbour = self.bootstrap.inode(ino)
            if stat.S_ISREG(neighbour.mode) and neighbour.size:
                for ref in self.bootstrap.chunks(neighbour):
                    yield ref, False

    def _cached_slices(
        self, refs: list[ChunkRef], offset: int, size: int, *, count_hits: bool = True
    ) -> list[_Slice] | None:
        """Where each part of the range sits in the cache files; None if a chunk is not cached.
        Each chunk counts as a cache hit of its reader, unless `count_hits` is False (a miss
        already counted)."""
        slices = []
        for ref in refs:
            if not 0 <= ref.blob_index < len(self.readers):
                return None  # the general path reports it
            reader = self.readers[ref.blob_index]
            if not reader.claim_cached(ref, count_hit=count_hits):
                return None
            lo = max(offset, ref.file_offset)
            hi = min(offset + size, ref.file_offset + ref.uncompressed_size)
            slices.append((reader, ref.uncompressed_offset + lo - ref.file_offset, lo - offset, hi - lo))
        return slices

    async def aclose(self) -> None:
        """Let go of the blob readers and of the backend (each closes with its last user)."""
        for reader in self.readers:
            await self.pool.release(reader)
        await self.pool.release_backend(self.backend)


def _assemble(found: list[tuple[ChunkRef, Chunk]], offset: int, size: int) -> bytearray | memoryview:
    """The range [offset, offset + size) from its chunks: a view of the one chunk that holds all
    of it (Rule 3), else a buffer they are copied into (zeros where no chunk is: holes)."""
    if len(found) == 1:
        ref, chunk = found[0]
        lo = offset - ref.file_offset
        if lo >= 0 and lo + size <= len(chunk):
            return memoryview(chunk)[lo : lo + size]
    out = bytearray(size)
    for ref, chunk in found:
        _place(out, offset, ref.file_offset, chunk)
    return out


def _read_slices(slices: list[_Slice], size: int) -> bytes | bytearray | memoryview:
    """The cached bytes of a range (Rule 2): one `read_span` when they are one span of one cache
    file."""
    if slices:
        reader, cache_offset, at, _ = slices[0]
        span_end = cache_offset
        for other, offset, other_at, length in slices:
            if other is not reader or offset != span_end or other_at != at + (offset - cache_offset):
                break
            span_end = offset + length
        else:
            if at == 0 and span_end - cache_offset == size:
                return reader.cache.read_span(cache_offset, size)
    out = bytearray(size)  # zeros: what holes read as
    view = memoryview(out)
    for reader, cache_offset, at, length in slices:
        reader.cache.read_into(cache_offset, view[at : at + length])
    return out


def _place(out: bytearray, want_start: int, chunk_start: int, data: Chunk) -> None:
    """Copy the part of a chunk (file offset `chunk_start`) that overlaps the requested range."""
    lo = max(want_start, chunk_start)
    hi = min(want_start + len(out), chunk_start + len(data))
    if lo < hi:
        out[lo - want_start : hi - want_start] = data[lo - chunk_start : hi - chunk_start]
