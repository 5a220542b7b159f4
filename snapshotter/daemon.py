"""The snapshotter daemon: wiring, and one root task group (STYLE 6).

The task group holds the fusefs supervisor and the signal watcher; the gRPC server (grpc.aio) runs on
the same asyncio loop and is stopped, with a grace period, when SIGTERM or SIGINT arrives. The
fusefs daemon is left running on the way out (fusefs_supervisor Rule 1): containers keep their
mounts while the snapshotter restarts.
"""

import logging
import os
import signal
from pathlib import Path

import anyio
import anyio.abc
import grpc
from prometheus_client import start_http_server

from lazyfly.api.fusefs import PrefetchSpec
from lazyfly.rpc.binding import service_handler
from lazyfly.snapshotter import metastore as ms
from lazyfly.snapshotter.config import SnapshotterSettings
from lazyfly.snapshotter.fusefs_supervisor import FusefsDaemonSpec, FusefsSupervisor
from lazyfly.snapshotter.metrics import SnapshotterMetrics
from lazyfly.snapshotter.proto import snapshots_pb2 as pb
from lazyfly.snapshotter.remote_layers import RemoteLayers, RemoteSettings
from lazyfly.snapshotter.service import SnapshotsService
from lazyfly.snapshotter.snapshotter import Snapshotter

log = logging.getLogger(__name__)
STOP_GRACE = 5.0


async def serve_snapshotter(
    settings: SnapshotterSettings, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve containerd's snapshots API on `settings.address` until SIGTERM or SIGINT."""
    settings.root.mkdir(parents=True, exist_ok=True)
    store = ms.MetaStore(settings.root / "metadata.db")
    metrics = SnapshotterMetrics(store)
    fusefs = FusefsSupervisor(
        FusefsDaemonSpec(
            mountpoint=settings.mountpoint,
            api_socket=settings.api_socket,
            cache_dir=settings.cache,
            log_path=settings.root / "fusefs.log",
            managed=settings.managed_fusefs,
        ),
        store,
        metrics,
    )
    snapshotter = Snapshotter(settings.root, store, fusefs.image_dir)
    remote = RemoteLayers(
        snapshotter,
        fusefs,
        RemoteSettings(
            plain_http=frozenset(settings.plain_http),
            peer_proxy=settings.peer_proxy,
            prefetch=PrefetchSpec(mode=settings.prefetch, workers=settings.prefetch_workers),  # type: ignore[arg-type]
            merge_limit=settings.merge_limit,
            read_ahead=settings.read_ahead,
        ),
        metrics,
    )
    server = grpc.aio.server()
    service = SnapshotsService(snapshotter, remote, metrics)
    server.add_generic_rpc_handlers((service_handler(pb.DESCRIPTOR.services_by_name["Snapshots"], service),))
    metrics_server = None
    if settings.metrics_address:
        host, _, port = settings.metrics_address.rpartition(":")
        # prometheus_client serves from its own thread; it is shut down on the way out below.
        metrics_server, _ = start_http_server(int(port), host or "127.0.0.1", registry=metrics.registry)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(fusefs.serve)
            # grpc listens from add_insecure_port on, but answers only once started: bind late, so
            # that the socket appears when the snapshotter answers (a client that connected early
            # would wait for a handshake that never came).
            _replace_stale_socket(settings.address)
            server.add_insecure_port(f"unix://{settings.address}")
            await server.start()
            os.chmod(settings.address, 0o600)
            log.info("snapshotter on %s, root %s", settings.address, settings.root)
            task_status.started()
            await _wait_for_stop_signal()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop(STOP_GRACE)
        if metrics_server is not None:
            metrics_server.shutdown()
        store.close()
        settings.address.unlink(missing_ok=True)
        log.info("snapshotter on %s stopped", settings.address)


async def _wait_for_stop_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            return


def _replace_stale_socket(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()
    elif path.exists():
        raise FileExistsError(f"{path} exists and is not a socket")
