"""The scheduler daemon: wiring and one root task group (STYLE 6); grpc.aio on asyncio.

Peers, tasks and hosts live in memory (the embedded default); idle ones are collected every
GC_INTERVAL seconds. Seed downloads run in the root task group (the SeedTrigger spawns into it); the
gRPC server is stopped before the group is cancelled, so no stream spawns into a closed group.
"""

import logging
import signal
import time

import anyio
import anyio.abc
import grpc
from dragonfly_api import scheduler_pb2_grpc

from lazyfly.scheduler.cluster_state import ClusterState
from lazyfly.scheduler.seed_trigger import SeedTrigger
from lazyfly.scheduler.service import SchedulerService

log = logging.getLogger(__name__)
STOP_GRACE = 5.0
GC_INTERVAL = 60.0
PEER_TTL = 24 * 3600.0
HOST_TTL = 3600.0


async def serve_scheduler(
    listen: str, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve scheduler.v2 on `listen` (HOST:PORT) until SIGTERM or SIGINT."""
    state = ClusterState()
    server = grpc.aio.server()
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"scheduler: cannot listen on {listen}")
    async with anyio.create_task_group() as tg:
        service = SchedulerService(state, SeedTrigger(tg.start_soon))
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(service, server)
        try:
            await server.start()
            tg.start_soon(_collect_garbage, state)
            log.info("scheduler on %s", listen)
            task_status.started(port)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("signal %s: stopping", signal.Signals(signum).name)
                    break
        finally:
            with anyio.CancelScope(shield=True):
                await server.stop(STOP_GRACE)
            tg.cancel_scope.cancel()


async def _collect_garbage(state: ClusterState) -> None:
    while True:
        await anyio.sleep(GC_INTERVAL)
        state.collect_garbage(time.time(), PEER_TTL, HOST_TTL)  # the clock the service stamps with
