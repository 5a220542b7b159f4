"""Triggering a seed peer: DownloadTask on the seed host's dfdaemon.v2 upload service (grpc.aio).

The seed host's peer daemon serves `DfdaemonUpload` on `{host.ip}:{host.upload_port}` (insecure). Asked to
download with need_back_to_source, it fetches the task from the origin, registering itself through
AnnouncePeer like any peer, and so becomes the holder the waiting peers are scheduled to.

Rules:
- Rule 1: the call runs in the background, in the daemon's root task group, handed in as `spawn`
  (STYLE 6); the conversation that asked for it does not wait for the call, only for the seed peer
  to show up in the cluster state.
- Rule 2: the first response must come within DEFAULT_SEED_START_TIMEOUT and the whole stream end
  within DEFAULT_SEED_DOWNLOAD_TIMEOUT; an unreachable seed thus fails fast enough for waiting
  peers to go back to source instead.
- Rule 3: the outcome settles task.seed_status (only while RUNNING: the seed peer's own AnnouncePeer
  may have told first) and is logged; a failure never reaches the task group, which would stop the
  scheduler for one bad seed.
"""

import logging
from collections.abc import Callable
from typing import Any

import anyio
import grpc
from dragonfly_api import common_pb2, dfdaemon_pb2, dfdaemon_pb2_grpc

from lazyfly.scheduler.cluster_state import Host, Task

log = logging.getLogger(__name__)
DEFAULT_SEED_START_TIMEOUT = 10.0  # seconds until the seed's first DownloadTask response
DEFAULT_SEED_DOWNLOAD_TIMEOUT = 3600.0  # seconds for the seed's whole download
Spawn = Callable[..., Any]  # anyio TaskGroup.start_soon: spawn(async_fn, *args)


class SeedTrigger:
    """Starts seed downloads in the background (Rule 1)."""

    def __init__(self, spawn: Spawn) -> None:
        self.spawn = spawn

    def trigger_nowait(self, task: Task, host: Host, download: common_pb2.Download) -> None:
        """Ask `host` to download `download` for `task`, in the background."""
        log.info("task %s: triggering seed host %s (%s:%d)", task.id, host.id, host.ip, host.upload_port)
        self.spawn(self.trigger, task, host, download)

    async def trigger(self, task: Task, host: Host, download: common_pb2.Download) -> None:
        """Ask `host` to download `download` for `task` and wait for the end (Rules 2 and 3)."""
        address = f"{host.ip}:{host.upload_port}"
        try:
            responses = await self._download(address, download)
        except (grpc.aio.AioRpcError, TimeoutError, OSError) as exc:
            if isinstance(exc, grpc.aio.AioRpcError):
                detail = f"{exc.code().name}: {exc.details()}"
            else:
                detail = str(exc) or type(exc).__name__  # a fail_after timeout has no message
            log.warning("task %s: seed host %s (%s) failed: %s", task.id, host.id, address, detail)
            task.settle_seed(False)
        except Exception:
            log.exception("task %s: seed host %s (%s) failed", task.id, host.id, address)
            task.settle_seed(False)
        else:
            log.info("task %s: seed host %s finished (%d responses)", task.id, host.id, responses)
            task.settle_seed(True)

    async def _download(self, address: str, download: common_pb2.Download) -> int:
        responses = 0
        with anyio.fail_after(DEFAULT_SEED_DOWNLOAD_TIMEOUT):
            async with grpc.aio.insecure_channel(address) as channel:
                stub = dfdaemon_pb2_grpc.DfdaemonUploadStub(channel)
                call = stub.DownloadTask(dfdaemon_pb2.DownloadTaskRequest(download=download))
                try:
                    with anyio.fail_after(DEFAULT_SEED_START_TIMEOUT):
                        response = await call.read()
                    while response is not grpc.aio.EOF:
                        responses += 1
                        response = await call.read()
                finally:
                    call.cancel()
        return responses
