"""scheduler.v2 over gRPC (the dragonfly-api stubs): protobuf in, ClusterState calls, protobuf out.

Served today: AnnounceHost, ListHosts, DeleteHost, StatPeer, StatTask, DeletePeer, DeleteTask.
The AnnouncePeer conversation and the cache/persistent variants answer UNIMPLEMENTED (the stubs'
default) until the peer daemon that speaks them exists.

Rule: error categories become status codes through lazyfly.rpc.binding.rpc_errors; messages name
the host, task or peer.
"""

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from dragonfly_api import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from google.protobuf import empty_pb2

from lazyfly.errors import NotFound
from lazyfly.rpc.binding import rpc_errors
from lazyfly.scheduler.cluster_state import ClusterState, Host
from lazyfly.scheduler.evaluator import HostView

log = logging.getLogger(__name__)
R = TypeVar("R")
SEED_HOST_TYPES = {1, 2, 3}  # super, strong and weak seed peers; 0 is a normal peer


_rpc = rpc_errors()


def host_from_proto(message: common_pb2.Host, now: float) -> Host:
    """Our record of an announced host."""
    view = HostView(
        idc=message.network.idc,
        location=message.network.location,
        is_seed=message.type in SEED_HOST_TYPES,
    )
    return Host(
        id=message.id,
        ip=message.ip,
        hostname=message.hostname,
        view=view,
        vortex_port=message.download_port,
        upload_port=message.port,
        disable_shared=message.disable_shared,
        announced_at=now,
    )


def host_to_proto(host: Host) -> common_pb2.Host:
    """The Host message of a known host."""
    return common_pb2.Host(
        id=host.id,
        type=1 if host.view.is_seed else 0,
        hostname=host.hostname,
        ip=host.ip,
        port=host.upload_port,
        download_port=host.vortex_port,
        disable_shared=host.disable_shared,
        network=common_pb2.Network(idc=host.view.idc, location=host.view.location),
    )


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    """The parts of scheduler.v2 served from a ClusterState."""

    def __init__(self, state: ClusterState, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock

    @_rpc
    async def AnnounceHost(self, request: scheduler_pb2.AnnounceHostRequest) -> empty_pb2.Empty:
        self.state.announce_host(host_from_proto(request.host, self.clock()))
        log.info("host %s (%s) announced", request.host.id, request.host.ip)
        return empty_pb2.Empty()

    @_rpc
    async def ListHosts(self, request: empty_pb2.Empty) -> scheduler_pb2.ListHostsResponse:
        return scheduler_pb2.ListHostsResponse(hosts=[host_to_proto(h) for h in self.state.hosts.values()])

    @_rpc
    async def DeleteHost(self, request: scheduler_pb2.DeleteHostRequest) -> empty_pb2.Empty:
        if request.host_id not in self.state.hosts:
            raise NotFound(f"host {request.host_id} is not known")
        self.state.delete_host(request.host_id)
        return empty_pb2.Empty()

    @_rpc
    async def StatPeer(self, request: scheduler_pb2.StatPeerRequest) -> common_pb2.Peer:
        peer = self.state.peer(request.peer_id)
        return common_pb2.Peer(id=peer.id, state=peer.state.value, task=self._task(peer.task_id))

    @_rpc
    async def StatTask(self, request: scheduler_pb2.StatTaskRequest) -> common_pb2.Task:
        return self._task(request.task_id)

    @_rpc
    async def DeletePeer(self, request: scheduler_pb2.DeletePeerRequest) -> empty_pb2.Empty:
        self.state.peer(request.peer_id)
        self.state.delete_peer(request.peer_id)
        return empty_pb2.Empty()

    @_rpc
    async def DeleteTask(self, request: scheduler_pb2.DeleteTaskRequest) -> empty_pb2.Empty:
        self._task(request.task_id)
        for peer in [p for p in self.state.peers.values() if p.task_id == request.task_id]:
            if not request.host_id or peer.host_id == request.host_id:
                self.state.delete_peer(peer.id)
        return empty_pb2.Empty()

    def _task(self, task_id: str) -> common_pb2.Task:
        task = self.state.tasks.get(task_id)
        if task is None:
            raise NotFound(f"task {task_id} is not known")
        return common_pb2.Task(
            id=task.id,
            url=task.url,
            content_length=task.content_length or 0,
            peer_count=len(task.dag),
            has_available_peer=bool(self.state.holders(task_id)),
        )
