"""AnnounceHost: the peer tells the scheduler who it is, at start and every `interval` seconds.

Rules:
- Rule 1: the first announcement is made before the peer serves downloads (a host must be known
  before its peers register); a scheduler that does not answer within DEFAULT_ANNOUNCE_TIMEOUT is
  logged and tried again RETRY_DELAY later (a node's scheduler may start after its peers), never
  fatal: meanwhile downloads go to the origin.
- Rule 2: a seed peer announces host type 1 (super seed), a normal peer 0.
"""

import logging
import platform

import anyio
import grpc
from dragonfly_api import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from google.protobuf import duration_pb2

from lazyfly.p2p.config import PeerSettings
from lazyfly.p2p.download.conductor import PeerIdentity

log = logging.getLogger(__name__)
DEFAULT_ANNOUNCE_TIMEOUT = 10.0
RETRY_DELAY = 1.0
SUPER_SEED, NORMAL = 1, 0


def host_message(settings: PeerSettings, identity: PeerIdentity, ports: dict[str, int]) -> common_pb2.Host:
    """This peer's common.v2.Host (with the ports actually bound)."""
    uname = platform.uname()
    return common_pb2.Host(
        id=identity.host_id,
        type=SUPER_SEED if settings.seed else NORMAL,
        hostname=identity.hostname,
        ip=identity.ip,
        port=ports["upload"],
        download_port=ports["vortex"],
        proxy_port=ports["proxy"],
        os=uname.system.lower(),
        platform=platform.platform(),
        kernel_version=uname.release,
        network=common_pb2.Network(idc=settings.idc, location=settings.location),
    )


async def announce_once(
    stub: scheduler_pb2_grpc.SchedulerStub, host: common_pb2.Host, interval: float
) -> bool:
    """One AnnounceHost; whether the scheduler took it (Rule 1)."""
    request = scheduler_pb2.AnnounceHostRequest(
        host=host, interval=duration_pb2.Duration(seconds=int(interval))
    )
    try:
        with anyio.fail_after(DEFAULT_ANNOUNCE_TIMEOUT):
            await stub.AnnounceHost(request)
    except (grpc.aio.AioRpcError, TimeoutError) as exc:
        detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else "no answer in time"
        log.warning("announcing host %s to the scheduler failed: %s", host.id, detail)
        return False
    return True


async def keep_announcing(
    stub: scheduler_pb2_grpc.SchedulerStub, host: common_pb2.Host, interval: float, announced: bool
) -> None:
    """Announce the host every `interval` seconds (RETRY_DELAY after a failure) until cancelled."""
    while True:
        await anyio.sleep(interval if announced else min(interval, RETRY_DELAY))
        announced = await announce_once(stub, host, interval)
