"""Prometheus metrics of the peer: pieces and bytes by where they came from, uploads, tasks, disk.

Rules:
- Rule 1: one CollectorRegistry per daemon (no global registry); names start with `lazyfly_peer_`.
- Rule 2: counters are counted where things happen (conductor, Vortex server, proxy, disk GC);
  the stored tasks and bytes are read from the store at scrape time, so they never drift from it.
"""

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "lazyfly_peer_"


class PeerMetrics:
    """The peer's counters and gauges."""

    def __init__(self, stored: Callable[[], tuple[int, int]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.tasks = Counter(
            PREFIX + "tasks", "Task downloads by outcome (started, finished, failed).",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.piece_bytes = Counter(
            PREFIX + "piece_bytes", "Bytes of pieces stored, by traffic type (remote_peer, back_to_source).",
            ["traffic_type"], registry=self.registry,
        )  # fmt: skip
        self.piece_failures = Counter(
            PREFIX + "piece_failures", "Pieces that failed, by traffic type.",
            ["traffic_type"], registry=self.registry,
        )  # fmt: skip
        self.upload_bytes = Counter(
            PREFIX + "upload_bytes",
            "Bytes of pieces sent to other peers over Vortex.",
            registry=self.registry,
        )
        self.proxy_requests = Counter(
            PREFIX + "proxy_requests", "Proxy requests by route (p2p, passthrough, tunnel) and status.",
            ["route", "status"], registry=self.registry,
        )  # fmt: skip
        self.evicted_bytes = Counter(
            PREFIX + "evicted_bytes", "Bytes the disk GC freed.", registry=self.registry
        )
        self.downloads_in_flight = Gauge(
            PREFIX + "downloads_in_flight", "Task downloads running now.", registry=self.registry
        )
        if stored is not None:
            self.registry.register(_StoredCollector(stored))


class _StoredCollector(Collector):
    def __init__(self, stored: Callable[[], tuple[int, int]]) -> None:
        self.stored = stored

    def collect(self) -> Iterator[Metric]:
        tasks, stored_bytes = self.stored()
        yield GaugeMetricFamily(PREFIX + "stored_tasks", "Tasks held on disk.", value=tasks)
        yield GaugeMetricFamily(
            PREFIX + "stored_bytes", "Content bytes of the tasks held.", value=stored_bytes
        )
