"""Verified chunks of one data blob: from the local cache when ready, else fetched, checked and cached.

A BlobReader ties four things: the blob's ChunkCache (sparse data file plus readiness map), an
InFlight table keyed by uncompressed offset, and a BlobBackend shared with other readers.

Rules:
- Rule 1 (validation first): every ref is checked before it touches the map or the cache: its
  uncompressed offset is page-aligned and the chunk lies inside the blob's uncompressed and
  compressed sizes; otherwise Corrupt naming the blob and the offset.
- Rule 2 (cache hits): a set bit means written and verified, so hits are read back without a
  digest check.
- Rule 3 (one fetch per chunk): refs are classified in one step without awaiting (ready / in flight
  / claimed by this call), so a chunk is never claimed twice; concurrent readers of a cold chunk
  wait for the one flight and take the bytes from memory. A cancelled owner abandons its flights
  and a waiter takes over (inflight.py).
- Rule 4 (merging): claimed chunks are sorted by compressed offset and merged into runs, one
  backend read_range_into each. A chunk joins a run if it starts at most `merge_gap` bytes after
  the run's end (default 16 KiB: a few small chunks of other files cost less than a round trip),
  not before it (refs whose stored bytes overlap, which only a crafted bootstrap has, go in
  separate runs), and the run stays within `merge_limit` bytes (default 1 MiB); a single chunk
  bigger than the limit is one run of its own, never split. Runs of one read go out concurrently.
- Rule 5 (verify, then store, then mark): the backend delivers a run into a RunSink
  (run_sink.py), which inflates and blake3-checks each chunk as its bytes arrive, in the worker
  thread that received them, and writes it to the cache there; then it announces the chunk, and
  its bit is set and its flight settled back on the event loop (one thread owns the map), so a
  reader waits for its own chunk, not for the rest of the run. A delivery that fails or is
  retried leaves the chunks it settled settled; a cancelled one settles nothing more. A digest or
  inflate failure raises Corrupt naming the blob and uncompressed offset, writes and marks
  nothing, and counts in `digest_failures`; the key is free again, so the next read fetches
  again.
- Rule 6 (full disk): a CacheFull write serves the verified bytes from memory, unmarked, counts
  `cache_full_events` and logs a warning once per reader.
- Rule 7 (prefetch): `prefetch` skips ready and in-flight chunks, claims one run at a time (so
  on-demand readers never queue behind a long prefetch list; runs are planned with the reader's
  merge limit or the caller's, e.g. read-ahead's larger one) and reads with `prefetch=True`. When a
  prefetch run fails, its flights are abandoned rather than failed, so waiting on-demand readers
  fetch again with on-demand retries; prefetch stops at the first failure and raises it.
- Rule 8 (no needless copies): a chunk stored uncompressed is received into a reused buffer,
  verified and cached from there, and handed to its readers as a view of the cache file's mapping,
  never copied (run_sink.py, Rule 2); chunk results are therefore read-only buffers (`bytes` or
  `memoryview`).
- Holes (file ranges without refs) are the caller's: a BlobReader only knows chunks.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from lazyfly.backend.base import BlobBackend
from lazyfly.errors import Corrupt, InvalidArgument
from lazyfly.format.layout import UNCOMPRESSED_ALIGNMENT, BlobInfo, ChunkRef
from lazyfly.fusefs.chunk_cache import ChunkCache
from lazyfly.fusefs.inflight import Abandoned, Flight, InFlight
from lazyfly.fusefs.run_sink import Chunk, Outcome, RunSink
from lazyfly.range_sink import range_length

log = logging.getLogger(__name__)

DEFAULT_MERGE_LIMIT = 1 << 20
DEFAULT_MERGE_GAP = 16 << 10

ChunkFlight = Flight[int, Chunk]


@dataclass
class BlobReaderStats:
    """Counters of one BlobReader since it was opened, plus a snapshot of its in-flight fetches."""

    cache_hits: int = 0  # chunks served from the cache file
    cache_misses: int = 0  # chunks not ready when first asked for (fetched, or waited for)
    bytes_fetched: int = 0  # bytes returned by the backend, prefetch included
    prefetch_bytes: int = 0  # the part of bytes_fetched read with prefetch=True (prefetch, read-ahead)
    digest_failures: int = 0  # chunks that failed to inflate or to match their blake3
    backend_errors: int = 0  # backend reads that raised
    cache_full_events: int = 0  # verified chunks that did not fit in the cache
    inflight: int = 0  # chunks being fetched now
    oldest_inflight_start: float | None = None  # trio.current_time() when the oldest one started


@dataclass
class _Settling:
    """The flights of one run being fetched, and which of them are settled (Rule 5)."""

    run: list[tuple[ChunkRef, ChunkFlight]]
    prefetch: bool
    done: set[int] = field(default_factory=set)  # indexes in `run` of the settled chunks
    first_error: Exception | None = None  # the first Corrupt outcome
    live: bool = True  # False once the fetch was cancelled


def plan_runs(refs: Sequence[ChunkRef], merge_limit: int, merge_gap: int) -> list[list[ChunkRef]]:
    """Group `refs` into backend reads: sorted by compressed offset, merged per Rule 4."""
    runs: list[list[ChunkRef]] = []
    start = end = 0
    for ref in sorted(refs, key=lambda r: (r.compressed_offset, r.uncompressed_offset)):
        ref_end = ref.compressed_offset + ref.compressed_size
        if runs and end <= ref.compressed_offset <= end + merge_gap and ref_end - start <= merge_limit:
            runs[-1].append(ref)
            end = ref_end
        else:
            runs.append([ref])
            start, end = ref.compressed_offset, ref_end
    return runs


class BlobReader:
    """Serves verified chunks of `blob` through `cache`, fetching misses from `backend`."""

    def __init__(
        self,
        blob: BlobInfo,
        cache: ChunkCache,
        backend: BlobBackend,
        *,
        merge_limit: int = DEFAULT_MERGE_LIMIT,
        merge_gap: int = DEFAULT_MERGE_GAP,
    ) -> None:
        if merge_limit <= 0 or merge_gap < 0:
            raise InvalidArgument(f"merge limit {merge_limit} and gap {merge_gap}: need limit > 0, gap >= 0")
        self.blob = blob
        self.cache = cache
        self.backend = backend
        self.merge_limit = merge_limit
        self.merge_gap = merge_gap
        self._inflight: InFlight[int, Chunk] = InFlight()
        self._counters = BlobReaderStats()
        self._warned_full = False

    @classmethod
    def open(
        cls,
        cache_dir: Path,
        blob: BlobInfo,
        backend: BlobBackend,
        *,
        merge_limit: int = DEFAULT_MERGE_LIMIT,
        merge_gap: int = DEFAULT_MERGE_GAP,
    ) -> "BlobReader":
        """Open the cache of `blob` in `cache_dir` (reusing what it holds) and return its reader."""
        cache = ChunkCache.open(cache_dir, blob)
        return cls(blob, cache, backend, merge_limit=merge_limit, merge_gap=merge_gap)

    @property
    def stats(self) -> BlobReaderStats:
        """Return a copy of the counters with the current in-flight count and oldest start."""
        return replace(
            self._counters, inflight=len(self._inflight), oldest_inflight_start=self._inflight.oldest_start()
        )

    async def aclose(self) -> None:
        """Close the cache (data made durable first). The backend is shared, so it stays open.

        Call it once no read or prefetch of this reader runs (its owner's nursery has ended).
        """
        await trio.to_thread.run_sync(self.cache.close)

    def claim_cached(self, ref: ChunkRef, *, count_hit: bool = True) -> bool:
        """True (and one cache hit counted, if `count_hit`) if `ref` is cached and no fetch of it
        is under way.

        The read path then reads the bytes it needs straight from the cache file
        (`cache.read_span`, `cache.read_into`): no whole-chunk read, no thread hop.
        """
        self._check(ref)
        key = ref.uncompressed_offset
        if self._inflight.get(key) is not None or not self.cache.is_ready(key):
            return False
        self._counters.cache_hits += count_hit
        return True

    async def read_chunks(self, refs: Sequence[ChunkRef]) -> list[Chunk]:
        """Return the verified uncompressed bytes of each ref, in order."""
        for ref in refs:
            self._check(ref)
        out: list[Chunk | None] = [None] * len(refs)
        todo = list(range(len(refs)))
        first_pass = True
        while todo:
            # Rule 3: classify every ref before the first await.
            hits: list[int] = []
            waits: list[tuple[int, ChunkFlight]] = []
            mine: dict[int, tuple[ChunkRef, ChunkFlight]] = {}
            for i in todo:
                key = refs[i].uncompressed_offset
                flight = self._inflight.get(key)
                if flight is None and self.cache.is_ready(key):
                    hits.append(i)
                    continue
                if flight is None:
                    flight = self._inflight.try_claim(key)
                    assert flight is not None  # no await since get() returned None
                    mine[key] = (refs[i], flight)
                waits.append((i, flight))
            if first_pass:
                self._counters.cache_misses += len(waits)
                first_pass = False
            try:
                if hits:
                    datas = await trio.to_thread.run_sync(self._read_cached, [refs[i] for i in hits])
                    for i, data in zip(hits, datas, strict=True):
                        out[i] = data
                    self._counters.cache_hits += len(hits)
                if mine:
                    await self._fetch_runs([*mine.values()])
            finally:
                for _, flight in mine.values():
                    flight.abandon()  # no-op for settled flights; frees the rest for a waiter
            todo = []
            for i, flight in waits:
                try:
                    out[i] = await flight.wait()
                except Abandoned:
                    todo.append(i)  # its owner was cancelled: classify again, maybe claim it
        return out  # type: ignore[return-value]  # every slot is filled once todo is empty

    async def prefetch(self, refs: Sequence[ChunkRef], *, merge_limit: int | None = None) -> None:
        """Fetch and cache the refs not ready or in flight, in background mode (Rule 7)."""
        for ref in refs:
            self._check(ref)
        wanted = {r.uncompressed_offset: r for r in refs if not self._busy(r)}
        for run in plan_runs(list(wanted.values()), merge_limit or self.merge_limit, self.merge_gap):
            claimed: list[tuple[ChunkRef, ChunkFlight]] = []
            for ref in run:
                if not self._busy(ref):  # an on-demand read may have taken or finished it since
                    flight = self._inflight.try_claim(ref.uncompressed_offset)
                    assert flight is not None
                    claimed.append((ref, flight))
            if not claimed:
                continue
            try:
                error = await self._fetch_run(claimed, prefetch=True)
            finally:
                for _, flight in claimed:
                    flight.abandon()
            if error is not None:
                raise error

    def busy(self, ref: ChunkRef) -> bool:
        """True if `ref` is cached or being fetched (so fetching it again is useless)."""
        return self._busy(ref)

    def _busy(self, ref: ChunkRef) -> bool:
        return ref.uncompressed_offset in self._inflight or self.cache.is_ready(ref.uncompressed_offset)

    def _check(self, ref: ChunkRef) -> None:
        """Rule 1: refuse a ref that cannot be a chunk of this blob."""
        u, c = ref.uncompressed_offset, ref.compressed_offset
        if (
            u % UNCOMPRESSED_ALIGNMENT
            or u < 0
            or ref.uncompressed_size <= 0
            or u + ref.uncompressed_size > self.blob.uncompressed_size
            or c < 0
            or ref.compressed_size <= 0
            or c + ref.compressed_size > self.blob.compressed_size
        ):
            raise Corrupt(
                f"blob {self.blob.digest}: chunk ref at uncompressed offset {u} ({ref.uncompressed_size} "
                f"bytes, stored {ref.compressed_size} at {c}) does not fit the blob"
            )

    def _read_cached(self, refs: list[ChunkRef]) -> list[bytes]:
        """Worker thread: read ready chunks back from the cache file (Rule 2)."""
        return [self.cache.read(r.uncompressed_offset, r.uncompressed_size) for r in refs]

    async def _fetch_runs(self, claimed: list[tuple[ChunkRef, ChunkFlight]]) -> None:
        """Fetch claimed chunks for an on-demand read, runs concurrently; settle every flight."""
        flights = {ref.uncompressed_offset: flight for ref, flight in claimed}
        runs = [
            [(ref, flights[ref.uncompressed_offset]) for ref in run]
            for run in plan_runs([ref for ref, _ in claimed], self.merge_limit, self.merge_gap)
        ]
        if len(runs) == 1:
            await self._fetch_run(runs[0], prefetch=False)
            return
        async with trio.open_nursery() as nursery:
            for run in runs:
                nursery.start_soon(self._fetch_run, run, False)

    async def _fetch_run(self, run: list[tuple[ChunkRef, ChunkFlight]], prefetch: bool) -> Exception | None:
        """Read one run with one backend request; settle each flight as its chunk arrives (Rule
        5); return the first error.

        Never raises an Exception (errors go to the flights, whose waiters raise them), so one
        bad run does not cancel its sibling runs.
        """
        refs = [ref for ref, _ in run]
        start = refs[0].compressed_offset
        settling = _Settling(run, prefetch)
        token = trio.lowlevel.current_trio_token()

        def announce(index: int, outcome: Outcome) -> None:  # the backend's worker thread
            token.run_sync_soon(self._settle, settling, index, outcome)

        sink = RunSink(self.blob, self.cache, refs, start, announce=announce)
        try:
            await self.backend.read_range_into(self.blob.digest, start, sink, prefetch=prefetch)
        except Exception as exc:
            self._counters.backend_errors += 1
            for _, flight in run:
                self._fail(flight, exc, prefetch)  # a no-op for the chunks already settled
            return exc
        except BaseException:
            settling.live = False  # cancelled: announcements still queued change nothing
            raise
        finally:
            sink.close()  # a backend thread still delivering a given-up run writes no more
        length = range_length(sink)
        self._counters.bytes_fetched += length
        if prefetch:
            self._counters.prefetch_bytes += length
        for index, outcome in enumerate(sink.outcomes):
            self._settle(settling, index, outcome)  # those whose announcement has not run yet
        return settling.first_error

    def _settle(self, settling: "_Settling", index: int, outcome: Outcome) -> None:
        """On the event loop: settle the flight of chunk `index` of a run by its outcome, once."""
        if not settling.live or index in settling.done:
            return
        settling.done.add(index)
        ref, flight = settling.run[index]
        if isinstance(outcome, Corrupt):
            self._counters.digest_failures += 1
            self._fail(flight, outcome, settling.prefetch)
            settling.first_error = settling.first_error or outcome
            return
        chunk, full = outcome
        if full is None:
            self.cache.mark_ready(ref.uncompressed_offset)  # Rule 5: the write has returned
        else:
            self._counters.cache_full_events += 1
            if not self._warned_full:
                self._warned_full = True
                log.warning("%s; serving chunks from memory until there is room", full)
        flight.set_result(chunk)

    @staticmethod
    def _fail(flight: ChunkFlight, error: Exception, prefetch: bool) -> None:
        # Rule 7: a failed prefetch hands its chunks back to on-demand readers instead of failing them.
        if prefetch:
            flight.abandon()
        else:
            flight.set_error(error)
