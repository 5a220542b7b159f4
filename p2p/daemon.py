"""The peer daemon: wiring and one root task group (STYLE 6); grpc.aio on asyncio, under anyio.

Start order: the piece store, the Vortex server, the upload gRPC service (TCP), the download gRPC
service (unix socket), the HTTP proxy and the metrics endpoint, then the host is announced to the
scheduler with the ports actually bound (0 in a setting means any free port), and only then are
downloads accepted. SIGTERM or SIGINT stops everything; finished tasks stay on disk for the next
start.
"""

import logging
import signal
from contextlib import AsyncExitStack

import anyio
import anyio.abc
import grpc
import httpx
from dragonfly_api import dfdaemon_pb2_grpc, scheduler_pb2_grpc
from prometheus_client import start_http_server

from lazyfly.p2p.config import PeerSettings
from lazyfly.p2p.disk_gc import collect_forever
from lazyfly.p2p.download.conductor import Bandwidths, Conductor, PeerIdentity
from lazyfly.p2p.download.manager import TaskManager
from lazyfly.p2p.host_announcer import announce_once, host_message, keep_announcing
from lazyfly.p2p.metrics import PeerMetrics
from lazyfly.p2p.proxy.headers import ProxyRules
from lazyfly.p2p.proxy.http_server import serve_http
from lazyfly.p2p.proxy.passthrough import passthrough_client
from lazyfly.p2p.proxy.router import ProxyRouter
from lazyfly.p2p.rate_limiter import RateLimiter
from lazyfly.p2p.rpc.download_service import DownloadService
from lazyfly.p2p.rpc.upload_service import UploadService
from lazyfly.p2p.storage.piece_store import PieceStore
from lazyfly.p2p.vortex.server import serve_vortex

log = logging.getLogger(__name__)
STOP_GRACE = 5.0
ORIGIN_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def _stored(store: PieceStore) -> tuple[int, int]:
    tasks = store.meta.all_tasks()
    return len(tasks), sum(t.content_length for t in tasks if t.finished)


async def serve_peer(
    settings: PeerSettings, *, task_status: anyio.abc.TaskStatus[dict[str, int]] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run the peer until SIGTERM or SIGINT; report the bound ports when serving."""
    identity = PeerIdentity(settings.ip, settings.hostname, settings.seed)
    store = PieceStore(settings.data_dir)
    metrics = PeerMetrics(lambda: _stored(store))
    rates = settings.rates
    bandwidths = Bandwidths(RateLimiter(rates.download), RateLimiter(rates.prefetch))
    async with AsyncExitStack() as stack:
        stack.callback(store.close)
        origin = await stack.enter_async_context(httpx.AsyncClient(timeout=ORIGIN_TIMEOUT, trust_env=False))
        passthrough = await stack.enter_async_context(passthrough_client())
        scheduler = None
        if settings.scheduler:
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(settings.scheduler))
            scheduler = (settings.scheduler, scheduler_pb2_grpc.SchedulerStub(channel))
        conductor = Conductor(
            store, origin, scheduler, identity, bandwidths, metrics, settings.concurrent_pieces
        )
        async with anyio.create_task_group() as tg:
            manager = TaskManager(store, conductor, tg)
            ports = {"vortex": await tg.start(_serve_vortex, store, settings, identity, metrics)}
            upload = grpc.aio.server()
            dfdaemon_pb2_grpc.add_DfdaemonUploadServicer_to_server(
                UploadService(manager, identity.host_id, settings.ip, ports["vortex"]), upload
            )
            ports["upload"] = upload.add_insecure_port(f"{settings.ip}:{settings.upload_port}")
            download = grpc.aio.server()
            dfdaemon_pb2_grpc.add_DfdaemonDownloadServicer_to_server(
                DownloadService(manager, identity.host_id), download
            )
            settings.socket_path.parent.mkdir(parents=True, exist_ok=True)
            settings.socket_path.unlink(missing_ok=True)
            download.add_insecure_port(f"unix:{settings.socket_path}")
            if ports["upload"] == 0:
                raise OSError(f"peer: cannot listen on {settings.ip}:{settings.upload_port}")
            await upload.start()
            await download.start()
            stack.push_async_callback(_stop_grpc, upload)
            stack.push_async_callback(_stop_grpc, download)
            router = ProxyRouter(
                manager,
                passthrough,
                ProxyRules(settings.proxy.rules),
                metrics,
                settings.proxy.default_registry,
            )
            ports["proxy"] = await tg.start(
                serve_http, router.handle, settings.proxy.listen, settings.proxy_port
            )
            metrics_server, _ = start_http_server(
                settings.metrics_port, settings.ip, registry=metrics.registry
            )
            stack.callback(metrics_server.shutdown)
            ports["metrics"] = metrics_server.server_port
            if scheduler is not None:
                host = host_message(settings, identity, ports)
                announced = await announce_once(scheduler[1], host, settings.announce_interval)
                tg.start_soon(keep_announcing, scheduler[1], host, settings.announce_interval, announced)
            tg.start_soon(collect_forever, manager, settings.gc, metrics)
            log.info("peer %s ready: %s", identity.host_id, " ".join(f"{k}={v}" for k, v in ports.items()))
            task_status.started(ports)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("signal %s: stopping", signal.Signals(signum).name)
                    break
            tg.cancel_scope.cancel()


async def _serve_vortex(
    store: PieceStore,
    settings: PeerSettings,
    identity: PeerIdentity,
    metrics: PeerMetrics,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await serve_vortex(
        store,
        settings.ip,
        settings.vortex_port,
        identity.host_id,
        bandwidth=RateLimiter(settings.rates.upload),
        on_sent=metrics.upload_bytes.inc,
        task_status=task_status,
    )


async def _stop_grpc(server: grpc.aio.Server) -> None:
    with anyio.CancelScope(shield=True):
        await server.stop(STOP_GRACE)
