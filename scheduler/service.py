"""scheduler.v2 over gRPC (the dragonfly-api stubs): protobuf in, ClusterState calls, protobuf out.

Served today: AnnounceHost, ListHosts, DeleteHost, StatPeer, StatTask, DeletePeer, DeleteTask and
AnnouncePeer; the cache/persistent variants answer UNIMPLEMENTED (the stubs' default).

Rules:
- Rule 1: error categories become status codes through lazyfly.rpc.binding.rpc_errors (unary calls)
  or lazyfly.rpc.status (the AnnouncePeer stream, which the decorator cannot wrap); messages name
  the host, task or peer.
- Rule 2: AnnouncePeer is an adapter: it reads a request, lets announce_peer.PeerConversation
  decide, writes the answer; it owns only the waits (the next request within
  DEFAULT_PEER_IDLE_TIMEOUT, each write within DEFAULT_WRITE_TIMEOUT, SCHEDULE_INTERVAL between
  scheduling attempts) and hands seed downloads to the SeedTrigger. However the stream ends, the
  conversation is closed, so its peer never stays RUNNING.
"""

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import anyio
import grpc
from dragonfly_api import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from google.protobuf import empty_pb2

from lazyfly.errors import NotFound, Unavailable
from lazyfly.rpc.binding import abort_with, rpc_errors
from lazyfly.scheduler.announce_peer import (
    SCHEDULE_INTERVAL,
    Answer,
    BackToSource,
    EmptyTask,
    PeerConversation,
    Schedule,
    ScheduleLater,
    TriggerSeed,
)
from lazyfly.scheduler.cluster_state import ClusterState, Host
from lazyfly.scheduler.evaluator import HostView
from lazyfly.scheduler.seed_trigger import SeedTrigger

log = logging.getLogger(__name__)
R = TypeVar("R")
SEED_HOST_TYPES = {1, 2, 3}  # super, strong and weak seed peers; 0 is a normal peer
DEFAULT_PEER_IDLE_TIMEOUT = 600.0  # seconds a peer may stay silent on its AnnouncePeer stream
DEFAULT_WRITE_TIMEOUT = 30.0  # seconds for one answer to be taken by the peer


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


def response_of(answer: Answer, state: ClusterState) -> scheduler_pb2.AnnouncePeerResponse:
    """The AnnouncePeerResponse of a conversation's answer; parents carry their host's addresses."""
    if isinstance(answer, EmptyTask):
        return scheduler_pb2.AnnouncePeerResponse(empty_task_response=scheduler_pb2.EmptyTaskResponse())
    if isinstance(answer, BackToSource):
        told = scheduler_pb2.NeedBackToSourceResponse(description=answer.description)
        return scheduler_pb2.AnnouncePeerResponse(need_back_to_source_response=told)
    parents = [
        common_pb2.Peer(id=p.id, state=p.state.value, host=host_to_proto(state.hosts[p.host_id]))
        for p in answer.parents
    ]
    normal = scheduler_pb2.NormalTaskResponse(candidate_parents=parents)
    return scheduler_pb2.AnnouncePeerResponse(normal_task_response=normal)


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    """The parts of scheduler.v2 served from a ClusterState."""

    def __init__(
        self, state: ClusterState, seeds: SeedTrigger, clock: Callable[[], float] = time.time
    ) -> None:
        self.state = state
        self.seeds = seeds
        self.clock = clock

    async def AnnouncePeer(
        self,
        request_iterator: AsyncIterator[scheduler_pb2.AnnouncePeerRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """One peer's conversation (Rule 2); an error ends the stream with its status (Rule 1)."""
        conversation = PeerConversation(self.state)
        try:
            await self._converse(conversation, context)
        except Exception as exc:
            await abort_with(context, f"AnnouncePeer {conversation.peer_id}", exc)
        finally:
            conversation.close(self.clock())

    async def _converse(self, conversation: PeerConversation, context: grpc.aio.ServicerContext) -> None:
        while True:
            request = None
            with anyio.move_on_after(DEFAULT_PEER_IDLE_TIMEOUT):
                request = await context.read()
            if request is None:
                raise Unavailable(
                    f"peer {conversation.peer_id}: silent for {DEFAULT_PEER_IDLE_TIMEOUT:.0f} s"
                )
            if request is grpc.aio.EOF:
                return
            outcome = conversation.receive(request, self.clock())
            if isinstance(outcome, Schedule):
                outcome = await self._schedule(conversation)
            if outcome is None:
                continue
            with anyio.move_on_after(DEFAULT_WRITE_TIMEOUT) as writing:
                await context.write(response_of(outcome, self.state))
            if writing.cancelled_caught:
                raise Unavailable(
                    f"peer {conversation.peer_id}: took no answer for {DEFAULT_WRITE_TIMEOUT:.0f} s"
                )

    async def _schedule(self, conversation: PeerConversation) -> Answer:
        attempt = 1
        while True:
            decision = conversation.schedule(attempt, self.clock())
            if isinstance(decision, TriggerSeed):
                self.seeds.trigger_nowait(decision.task, decision.host, decision.download)
            elif not isinstance(decision, ScheduleLater):
                log.info("peer %s: %s", conversation.peer_id, type(decision).__name__)
                return decision
            await anyio.sleep(SCHEDULE_INTERVAL)
            attempt += 1

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
