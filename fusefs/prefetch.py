"""Prefetch for one mounted image: a pure planner, a token bucket, and a capped background worker.

What it owns: deciding which chunks to fetch before they are read, in which order, and fetching
them through the image's BlobReaders at a bounded rate. Verifying, caching and single-flight stay
in blob_reader.py; this module only calls `BlobReader.prefetch`.

Rules:
- Rule 1 (plan order): the files named in the settings first (a directory means every regular
  file below it, depth-first in name order, symlinks not followed; a missing or relative path is
  logged and skipped), then with mode `table` the chunks of the bootstrap's prefetch table (same
  expansion) in blob order: the builder stores those files together in a blob of their own, so
  in blob order they come in a few large range requests, where the table's order (the order a
  workload first read them) would scatter the batches across that blob; when the image has such
  a prefetch blob, only the table's chunks in it (of a file listed with byte ranges, the builder
  put only those ranges' chunks there);
  with mode `all` then every remaining chunk the image's files reference, in blob order, then
  uncompressed offset order (chunks of a chunk-dictionary blob that no file uses are skipped).
  A chunk appears once in a plan, keyed by (blob index, uncompressed offset), however many files
  share it. Mode `none` plans only the named files. Planning reads only the bootstrap.
- Rule 2 (batches): consecutive plan entries of one blob form a batch of at most BATCH_LIMIT
  compressed bytes (a bigger chunk is a batch of its own); one `BlobReader.prefetch` call each.
  Chunks already in the cache are dropped from a batch before it is charged or fetched, so a
  warm restart costs neither bandwidth nor backend requests. Bytes are counted per batch, not
  from the readers' counters: readers are pooled and may serve other images too.
- Rule 3 (bandwidth): with `bandwidth > 0`, each batch is charged its compressed bytes to one
  TokenBucket shared by all workers before it is fetched (burst: one second's worth).
- Rule 4 (never fatal): a failed batch (backend down, corrupt chunk, bad blob index) is logged
  (the first at warning, the rest at debug, a summary at the end) and counted, and the worker
  moves on; the backends already retry less for `prefetch=True`. A corrupt bootstrap stops
  planning with an error log and one failure counted, not an exception.
- Rule 5 (ownership): `run_prefetch` owns one nursery of `settings.workers` tasks; cancelling it
  (daemon shutdown, image removal) stops every fetch, and BlobReader abandons the flights, so
  nothing half-written is marked ready. The image's readers must stay open until it returned.
- Rule 6 (on-demand first), with a limitation: `BlobReader.stats.inflight` counts prefetch
  flights as well as on-demand ones, so the worker cannot tell when on-demand reads are waiting.
  It keeps on-demand reads ahead by other means: at most `workers` batches in flight; a
  checkpoint (`trio.lowlevel.checkpoint()`, i.e. `trio.sleep(0)`) before every batch; BlobReader
  claiming one run at a time and skipping chunks an on-demand read already claimed; and
  `prefetch=True` letting backends (the proxy) deprioritise. A reader counter of on-demand
  flights alone would allow a real pause.
- Planning a large image is CPU work on the mmapped bootstrap, so it runs in a worker thread
  (not abandoned on cancel: no thread outlives its owner; Bootstrap reads are safe under the GIL).
"""

import logging
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import trio

from lazyfly.errors import Corrupt, InvalidArgument, NotFound
from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.format.layout import ChunkRef, Inode
from lazyfly.fusefs.config import PrefetchSettings
from lazyfly.fusefs.image import MountedImage

log = logging.getLogger(__name__)

MODES = ("none", "table", "all")
BATCH_LIMIT = 1 << 20  # compressed bytes per BlobReader.prefetch call

PlanEntry = tuple[int, ChunkRef]  # (blob index, ref)


@dataclass
class PrefetchStats:
    """Counters of one image's prefetch, updated by `run_prefetch` as it goes."""

    planned_chunks: int = 0  # chunks in the plan (each once)
    batches: int = 0  # batches fetched and cached
    failures: int = 0  # batches that failed (logged, skipped)
    bytes: int = 0  # compressed bytes of the chunks that successful batches asked for
    finished: bool = False  # the whole plan was worked through (not set when cancelled)


class TokenBucket:
    """A rate limit of `rate` units per second with bursts up to `burst`, on an injected clock.

    Debt model: `reserve(n)` always takes `n` (the balance may go negative) and returns how long
    the caller must wait before using them, so amounts larger than the burst still pass at the
    average rate, and concurrent callers queue behind each other's debt. No I/O, no trio.
    """

    def __init__(self, rate: float, clock: Callable[[], float], burst: float | None = None) -> None:
        if rate <= 0:
            raise InvalidArgument(f"token bucket rate {rate}: must be positive")
        self.rate = float(rate)
        self.burst = float(rate if burst is None else burst)
        if self.burst <= 0:
            raise InvalidArgument(f"token bucket burst {burst}: must be positive")
        self._clock = clock
        self._tokens = self.burst
        self._stamp: float | None = None  # the clock is first read on first use

    def reserve(self, amount: int) -> float:
        """Take `amount` tokens; return the seconds to wait before spending them (0.0 if none)."""
        now = self._clock()
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


def plan_prefetch(bootstrap: Bootstrap, settings: PrefetchSettings) -> list[PlanEntry]:
    """Return the chunks to prefetch as (blob index, ref), in priority order (Rule 1)."""
    if settings.mode not in MODES:
        raise InvalidArgument(f"prefetch mode {settings.mode!r}: expected one of {', '.join(MODES)}")
    plan: list[PlanEntry] = []
    seen: set[tuple[int, int]] = set()

    def add(refs: list[ChunkRef]) -> None:
        for ref in refs:
            key = (ref.blob_index, ref.uncompressed_offset)
            if key not in seen:
                seen.add(key)
                plan.append((ref.blob_index, ref))

    for path in settings.files:
        if not path.startswith("/"):
            log.warning("prefetch: skipping %r, not an absolute path", path)
            continue
        try:
            ino = bootstrap.resolve(path)
        except NotFound:
            log.warning("prefetch: skipping %s, not in the image", path)
            continue
        for inode in _files_under(bootstrap, ino):
            add(bootstrap.chunks(inode))
    if settings.mode == "table":
        table: list[ChunkRef] = []
        for ino in bootstrap.prefetch():
            try:
                files = list(_files_under(bootstrap, ino))
            except NotFound:
                log.warning("prefetch: skipping inode %d of the prefetch table, not in the image", ino)
                continue
            for inode in files:
                table += bootstrap.chunks(inode)
        gathered = {i for i, blob in enumerate(bootstrap.blobs()) if blob.prefetch}
        if gathered:
            table = [ref for ref in table if ref.blob_index in gathered]
        add(sorted(table, key=lambda ref: (ref.blob_index, ref.compressed_offset)))
    elif settings.mode == "all":
        rest: dict[tuple[int, int], ChunkRef] = {}
        for ino in range(1, bootstrap.inode_count + 1):
            for ref in bootstrap.chunks(bootstrap.inode(ino)):
                rest.setdefault((ref.blob_index, ref.uncompressed_offset), ref)
        add([rest[key] for key in sorted(rest)])
    return plan


def _files_under(bootstrap: Bootstrap, ino: int) -> Iterator[Inode]:
    """Yield the regular files at or below inode `ino`, depth-first in name order."""
    stack = [bootstrap.inode(ino)]
    seen_dirs: set[int] = set()
    while stack:
        inode = stack.pop()
        if stat.S_ISREG(inode.mode):
            yield inode
        elif stat.S_ISDIR(inode.mode) and inode.ino not in seen_dirs:  # a tampered tree cannot loop
            seen_dirs.add(inode.ino)
            children = [bootstrap.inode(child) for _, child, _ in bootstrap.entries(inode)]
            stack.extend(reversed(children))


def plan_batches(plan: list[PlanEntry], limit: int = BATCH_LIMIT) -> list[tuple[int, list[ChunkRef]]]:
    """Group consecutive entries of one blob into batches of at most `limit` compressed bytes."""
    batches: list[tuple[int, list[ChunkRef]]] = []
    size = 0
    for blob_index, ref in plan:
        if batches and batches[-1][0] == blob_index and size + ref.compressed_size <= limit:
            batches[-1][1].append(ref)
            size += ref.compressed_size
        else:
            batches.append((blob_index, [ref]))
            size = ref.compressed_size
    return batches


async def run_prefetch(
    image: MountedImage,
    settings: PrefetchSettings,
    *,
    stats: PrefetchStats | None = None,
    batch_limit: int = BATCH_LIMIT,
    task_status: trio.TaskStatus[PrefetchStats] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Prefetch `image` per `settings` until done or cancelled; `started` hands over the stats.

    Invalid settings raise InvalidArgument before `started`; nothing after it raises (Rule 4).
    """
    if settings.mode not in MODES:
        raise InvalidArgument(f"prefetch mode {settings.mode!r}: expected one of {', '.join(MODES)}")
    if settings.workers < 1 or settings.bandwidth < 0:
        raise InvalidArgument(
            f"prefetch workers {settings.workers} and bandwidth {settings.bandwidth}: "
            "need at least one worker and a bandwidth >= 0"
        )
    stats = stats if stats is not None else PrefetchStats()
    task_status.started(stats)
    try:
        plan = await trio.to_thread.run_sync(plan_prefetch, image.bootstrap, settings)
    except Corrupt as exc:
        stats.failures += 1
        log.error("prefetch of image %s: cannot plan: %s", image.image_id, exc)
        return
    stats.planned_chunks = len(plan)
    if not plan:
        stats.finished = True
        return
    bucket = TokenBucket(settings.bandwidth, trio.current_time) if settings.bandwidth else None
    # One iterator shared by the workers: each takes the next batch in priority order.
    batches = iter(plan_batches(plan, batch_limit))

    async def worker() -> None:
        for blob_index, refs in batches:
            await trio.lowlevel.checkpoint()  # Rule 6: let on-demand reads run between batches
            try:
                await _fetch_batch(image, blob_index, refs, bucket, stats)
            except Exception as exc:
                stats.failures += 1
                level = logging.WARNING if stats.failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "prefetch of image %s: batch of blob %d failed: %s",
                    image.image_id,
                    blob_index,
                    exc,
                )

    async with trio.open_nursery() as nursery:
        for _ in range(settings.workers):
            nursery.start_soon(worker)
    stats.finished = True
    log.info(
        "prefetch of image %s done: %d chunks planned, %d batches, %d failed, %d bytes fetched",
        image.image_id, stats.planned_chunks, stats.batches, stats.failures, stats.bytes,
    )  # fmt: skip


async def _fetch_batch(
    image: MountedImage,
    blob_index: int,
    refs: list[ChunkRef],
    bucket: TokenBucket | None,
    stats: PrefetchStats,
) -> None:
    """Charge and fetch the refs of one batch that are not cached yet (Rules 2 and 3)."""
    if not 0 <= blob_index < len(image.readers):
        raise Corrupt(
            f"image {image.image_id}: chunk ref to blob {blob_index}, image has {len(image.readers)}"
        )
    reader = image.readers[blob_index]
    todo = [ref for ref in refs if not reader.cache.is_ready(ref.uncompressed_offset)]
    if not todo:
        return
    if bucket is not None:
        await trio.sleep(bucket.reserve(sum(ref.compressed_size for ref in todo)))
    await reader.prefetch(todo)
    stats.batches += 1
    stats.bytes += sum(ref.compressed_size for ref in todo)
