"""Prometheus metrics of one fusefs daemon, read from the served images at scrape time.

Nothing here counts: BlobReader (`.stats`), each backend (`.stats`) and each image's ReadAhead own
their counters, and the collector turns a snapshot of them into metric families when /metrics is
scraped. So a removed
image's series simply stop, and no counter can drift from the numbers GET /api/v1/daemon shows.

Rules:
- Rule 1: one CollectorRegistry per daemon (no global registry), built by `build_registry`.
- Rule 2: every image series carries `image=<id>`; fetch and backend series also carry
  `backend=local|registry|proxy` (the backend's name).
- Rule 3: names start with `lazyfly_fusefs_`; counters end in `_total` (prometheus_client adds it);
  in-flight age is `now - oldest start` on the daemon's clock (trio.current_time), 0 when idle.
"""

import dataclasses
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lazyfly.fusefs.blob_reader import BlobReaderStats
from lazyfly.fusefs.image import MountedImage

PREFIX = "lazyfly_fusefs_"
ImagesSource = Callable[[], Iterable[MountedImage]]

# (field of BlobReaderStats, metric name, help, with the backend label)
_READER_COUNTERS = [
    ("cache_hits", "cache_hits", "Chunks served from the local cache.", False),
    ("cache_misses", "cache_misses", "Chunks not cached when asked for (fetched or waited for).", False),
    ("bytes_fetched", "fetched_bytes", "Bytes fetched from the backend, prefetch included.", True),
    ("prefetch_bytes", "prefetch_bytes", "Bytes fetched by prefetch and read-ahead.", True),
    ("digest_failures", "digest_failures", "Chunks refused: inflate failed or blake3 mismatched.", False),
    ("backend_errors", "fetch_errors", "Backend reads of the read path that failed.", True),
    ("cache_full_events", "cache_full_events", "Verified chunks served from memory: cache disk full.", False),
]
# (attribute of the image's ReadAhead, metric name, help)
_READ_AHEAD_COUNTERS = [
    ("jobs_done", "read_ahead_runs", "Read-ahead runs of chunks fetched (or found fetched already)."),
    ("jobs_failed", "read_ahead_failed_runs", "Read-ahead runs whose fetch failed (left to reads)."),
    ("jobs_dropped", "read_ahead_dropped_runs", "Read-ahead runs not queued: the queue was full."),
]
# (field of BackendStats, metric name, help)
_BACKEND_COUNTERS = [
    ("requests", "backend_requests", "Range reads asked of the backend."),
    ("bytes", "backend_bytes", "Bytes returned by successful backend reads."),
    ("errors", "backend_errors", "Backend reads that finally raised."),
    ("retries", "backend_retries", "Backend attempts beyond the first."),
    ("fallbacks", "backend_fallbacks", "Reads the peer proxy handed to the registry."),
]


def total_stats(image: MountedImage) -> BlobReaderStats:
    """The counters of `image`'s blob readers summed; the oldest in-flight start is the minimum."""
    total = BlobReaderStats()
    for reader in image.readers:
        stats = reader.stats
        for field in dataclasses.fields(stats):
            if field.name != "oldest_inflight_start":
                setattr(total, field.name, getattr(total, field.name) + getattr(stats, field.name))
        start = stats.oldest_inflight_start
        if start is not None and (total.oldest_inflight_start is None or start < total.oldest_inflight_start):
            total.oldest_inflight_start = start
    return total


class FusefsCollector(Collector):
    """Turns the stats of `images()` into metric families at each scrape."""

    def __init__(self, images: ImagesSource, clock: Callable[[], float]) -> None:
        self.images = images
        self.clock = clock

    def describe(self) -> list[Metric]:
        """Nothing up front: the families depend on the images served at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One family per counter and gauge, one sample per image (and backend)."""
        images = list(self.images())
        now = self.clock()
        snapshots = [(image, total_stats(image)) for image in images]
        reads = CounterMetricFamily(PREFIX + "chunk_reads", "Chunks asked for by reads.", labels=["image"])
        for image, stats in snapshots:
            reads.add_metric([image.image_id], stats.cache_hits + stats.cache_misses)
        yield reads
        for field, name, doc, by_backend in _READER_COUNTERS:
            labels = ["image", "backend"] if by_backend else ["image"]
            family = CounterMetricFamily(PREFIX + name, doc, labels=labels)
            for image, stats in snapshots:
                values = [image.image_id, image.backend.name] if by_backend else [image.image_id]
                family.add_metric(values, getattr(stats, field))
            yield family
        for field, name, doc in _READ_AHEAD_COUNTERS:
            family = CounterMetricFamily(PREFIX + name, doc, labels=["image"])
            for image in images:
                family.add_metric([image.image_id], getattr(image.read_ahead, field))
            yield family
        for field, name, doc in _BACKEND_COUNTERS:
            family = CounterMetricFamily(PREFIX + name, doc, labels=["image", "backend"])
            for image in images:
                family.add_metric([image.image_id, image.backend.name], getattr(image.backend.stats, field))
            yield family
        inflight = GaugeMetricFamily(
            PREFIX + "inflight_chunks", "Chunks being fetched now.", labels=["image"]
        )
        age = GaugeMetricFamily(
            PREFIX + "oldest_inflight_age_seconds",
            "Age of the oldest chunk fetch still running (0 when none): spots hung I/O.",
            labels=["image"],
        )
        for image, stats in snapshots:
            inflight.add_metric([image.image_id], stats.inflight)
            start = stats.oldest_inflight_start
            age.add_metric([image.image_id], 0.0 if start is None else max(0.0, now - start))
        yield inflight
        yield age
        yield GaugeMetricFamily(PREFIX + "images", "Images served by this daemon.", value=len(images))


def build_registry(images: ImagesSource, clock: Callable[[], float]) -> CollectorRegistry:
    """A registry of its own for one daemon, holding its FusefsCollector (Rule 1)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FusefsCollector(images, clock))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of `registry`."""
    return generate_latest(registry)
