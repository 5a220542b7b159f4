"""fusefs metrics: the collector reads the images' reader and backend stats at scrape time."""

from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from lazyfly.backend.stats import BackendStats
from lazyfly.fusefs.blob_reader import BlobReaderStats
from lazyfly.fusefs.metrics import build_registry, render, total_stats
from lazyfly.fusefs.read_ahead import ReadAhead


def fake_image(image_id: str, backend: str, *stats: BlobReaderStats) -> Any:
    readers = [SimpleNamespace(stats=s) for s in stats]
    return SimpleNamespace(
        image_id=image_id,
        readers=readers,
        backend=SimpleNamespace(name=backend, stats=BackendStats()),
        read_ahead=ReadAhead(),
    )


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_reader_stats_are_summed_and_the_oldest_start_kept():
    image = fake_image(
        "a",
        "local",
        BlobReaderStats(cache_hits=2, bytes_fetched=10, inflight=1, oldest_inflight_start=50.0),
        BlobReaderStats(cache_misses=3, bytes_fetched=5, inflight=2, oldest_inflight_start=40.0),
    )
    total = total_stats(image)
    assert (total.cache_hits, total.cache_misses, total.bytes_fetched, total.inflight) == (2, 3, 15, 3)
    assert total.oldest_inflight_start == 40.0


def test_a_scrape_labels_every_series_by_image_and_backend():
    busy = fake_image(
        "busy",
        "registry",
        BlobReaderStats(
            cache_hits=1,
            cache_misses=4,
            bytes_fetched=4096,
            prefetch_bytes=1024,
            digest_failures=1,
            inflight=2,
            oldest_inflight_start=90.0,
        ),
    )
    busy.backend.stats = BackendStats(requests=3, bytes=4096, errors=1, retries=2)
    busy.read_ahead.jobs_done, busy.read_ahead.jobs_dropped = 7, 1
    idle = fake_image("idle", "local", BlobReaderStats())
    images = [busy, idle]
    now = [100.0]
    registry = build_registry(lambda: images, lambda: now[0])

    got = samples(render(registry).decode())
    busy_labels = frozenset({("image", "busy")})
    busy_backend = frozenset({("image", "busy"), ("backend", "registry")})
    assert got[("lazyfly_fusefs_chunk_reads_total", busy_labels)] == 5
    assert got[("lazyfly_fusefs_fetched_bytes_total", busy_backend)] == 4096
    assert got[("lazyfly_fusefs_prefetch_bytes_total", busy_backend)] == 1024
    assert got[("lazyfly_fusefs_digest_failures_total", busy_labels)] == 1
    assert got[("lazyfly_fusefs_backend_retries_total", busy_backend)] == 2
    assert got[("lazyfly_fusefs_backend_errors_total", busy_backend)] == 1
    assert got[("lazyfly_fusefs_inflight_chunks", busy_labels)] == 2
    assert got[("lazyfly_fusefs_oldest_inflight_age_seconds", busy_labels)] == 10.0
    assert got[("lazyfly_fusefs_oldest_inflight_age_seconds", frozenset({("image", "idle")}))] == 0.0
    assert got[("lazyfly_fusefs_read_ahead_runs_total", busy_labels)] == 7
    assert got[("lazyfly_fusefs_read_ahead_dropped_runs_total", busy_labels)] == 1
    assert got[("lazyfly_fusefs_read_ahead_failed_runs_total", busy_labels)] == 0
    assert got[("lazyfly_fusefs_images", frozenset())] == 2

    images.remove(idle)  # read at scrape time: a removed image's series are gone
    assert not any(("image", "idle") in labels for _, labels in samples(render(registry).decode()))
