"""Prometheus metrics of the snapshotter: calls, lazy layers, fusefs restarts, and its state.

Rules:
- Rule 1: one CollectorRegistry per daemon (no global registry); names start with
  `lazyfly_snapshotter_`.
- Rule 2: counters are counted where things happen (the service, RemoteLayers, the supervisor);
  gauges of the state (snapshots by kind, served images) are read from the store at scrape time,
  so they never drift from it.
"""

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lazyfly.snapshotter import metastore as ms

PREFIX = "lazyfly_snapshotter_"


class SnapshotterMetrics:
    """The snapshotter's counters, and its state read at scrape time."""

    def __init__(self, store: ms.MetaStore) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            PREFIX + "calls", "Snapshots API calls answered, by method and status code.",
            ["method", "code"], registry=self.registry,
        )  # fmt: skip
        self.lazy_layers = Counter(
            PREFIX + "lazy_layers", "Layers committed without a download, by kind (blob, bootstrap).",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        self.fallbacks = Counter(
            PREFIX + "fallbacks", "Prepares naming a layer that is not lazyfly's: downloaded by containerd.",
            registry=self.registry,
        )  # fmt: skip
        self.fusefs_restarts = Counter(
            PREFIX + "fusefs_restarts", "fusefs daemons brought up again, by how (takeover, fresh).",
            ["how"], registry=self.registry,
        )  # fmt: skip
        self.registry.register(_StateCollector(store))


class _StateCollector(Collector):
    def __init__(self, store: ms.MetaStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        with self.store.transaction(False) as tx:
            infos = ms.walk_info(tx)
            images = ms.images(tx)
        snapshots = GaugeMetricFamily(PREFIX + "snapshots", "Snapshots by kind.", labels=["kind"])
        for kind in ("view", "active", "committed"):
            snapshots.add_metric([kind], sum(1 for info in infos if info.kind.name.lower() == kind))
        yield snapshots
        yield GaugeMetricFamily(
            PREFIX + "images", "lazyfly images the snapshotter serves.", value=len(images)
        )
