"""One peer's AnnouncePeer conversation with the scheduler (pure: requests in, answers out, no I/O).

The grpc adapter (service.py) reads a request, calls `receive`, and writes the answer back; when
`receive` says SCHEDULE it calls `schedule(attempt)` until that answers, waiting SCHEDULE_INTERVAL
before each next attempt (on ScheduleLater, and on TriggerSeed once the seed download is started).
Everything here is decided from the ClusterState and the request alone: tested without sockets.

Rules:
- Rule 1: the first message registers the peer (`register_peer_request`), on an announced host;
  anything else first, a second registration, or a later message naming another host, task or peer
  ends the conversation (FailedPrecondition / InvalidArgument naming the peer). So does a state move
  the peer_state table forbids, or a message outside the states MESSAGE_STATES gives it.
- Rule 2: registration answers empty_task_response when actual_content_length is 0; otherwise the
  peer is scheduled, in order: the download asks for the origin (need_back_to_source) → back to
  source; candidate parents exist → normal_task_response with them, recorded as DAG edges; the
  peer is on a seed host → back to source; the task has no seed peer yet, a seed host is announced
  and no seed was ever triggered for it → TriggerSeed (once per task); from attempt
  BACK_TO_SOURCE_ATTEMPT, when no seed download is under way → back to source; after the last
  attempt → back to source. Going to the origin on a retry is allowed only when the download does
  not disable it and the task has fewer than MAX_BACK_TO_SOURCE_PEERS back-to-source peers; past the
  last attempt without it, Unavailable.
- Rule 3: while a triggered seed is on its way (its DownloadTask runs and no seed peer of the task
  serves yet), a peer may wait SEED_WAIT_ATTEMPTS attempts (~10 s) instead of SCHEDULE_ATTEMPTS:
  the seed has to HEAD the origin, register and report back_to_source_started before it is a
  holder, which takes longer than 2 s on a slow origin, and one seed download is what keeps every
  other peer off the origin. A failed seed ends the wait at once.
- Rule 4: piece finished → the piece counts for the peer (candidate ordering) and its cost is kept
  per parent, on the child and on the parent (bad-parent detection); piece failed → the parent is
  blocklisted for this peer; reschedule → the named parents are blocklisted and the peer scheduled
  again. A back-to-source peer joins task.back_to_source_peers when it starts.
- Rule 5: finished → SUCCEEDED (the task learns its length and piece count) and the peer stays a
  holder after its stream closes; failed → FAILED. A seed peer's end settles the task's seed status.
  `close` marks a peer whose stream ended before it finished or failed FAILED, never left RUNNING.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dragonfly_api import common_pb2, scheduler_pb2

from lazyfly.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from lazyfly.scheduler.cluster_state import SERVING_STATES, ClusterState, Host, Peer, SeedStatus, Task
from lazyfly.scheduler.evaluator import score
from lazyfly.scheduler.peer_state import PeerState

SCHEDULE_ATTEMPTS = 5
SCHEDULE_INTERVAL = 0.5  # seconds between attempts
BACK_TO_SOURCE_ATTEMPT = 4
SEED_WAIT_ATTEMPTS = 20  # ~10 s at SCHEDULE_INTERVAL (Rule 3)
MAX_BACK_TO_SOURCE_PEERS = 200

_S = PeerState
MESSAGE_STATES: dict[str, frozenset[PeerState]] = {
    "download_piece_finished_request": frozenset({_S.RUNNING, _S.BACK_TO_SOURCE}),
    "download_piece_failed_request": frozenset({_S.RUNNING, _S.BACK_TO_SOURCE}),
    "download_piece_back_to_source_finished_request": frozenset({_S.BACK_TO_SOURCE}),
    "download_piece_back_to_source_failed_request": frozenset({_S.BACK_TO_SOURCE}),
    "reschedule_peer_request": frozenset({_S.RECEIVED_NORMAL, _S.RUNNING}),
    "download_peer_back_to_source_finished_request": frozenset({_S.BACK_TO_SOURCE}),
}
ENDED = frozenset({_S.SUCCEEDED, _S.FAILED, _S.LEAVE})


@dataclass(frozen=True)
class EmptyTask:
    """Answer empty_task_response: nothing to download."""


@dataclass(frozen=True)
class NormalTask:
    """Answer normal_task_response with these parents."""

    parents: tuple[Peer, ...]


@dataclass(frozen=True)
class BackToSource:
    """Answer need_back_to_source_response."""

    description: str


@dataclass(frozen=True)
class ScheduleLater:
    """No parent yet: call `schedule` again with the next attempt after SCHEDULE_INTERVAL."""


@dataclass(frozen=True)
class TriggerSeed:
    """Ask `host` to download `download` from the origin, then schedule later (as ScheduleLater)."""

    task: Task
    host: Host
    download: common_pb2.Download


@dataclass(frozen=True)
class Schedule:
    """`receive` has no answer yet: the peer needs parents, call `schedule`."""


Answer = EmptyTask | NormalTask | BackToSource
SCHEDULE = Schedule()
SCHEDULE_LATER = ScheduleLater()


def seed_download(download: common_pb2.Download) -> common_pb2.Download:
    """What a seed is asked to fetch: the peer's download, whole, from the origin, kept in its cache
    (no range, no output path of the asking host)."""
    copy = common_pb2.Download()
    copy.CopyFrom(download)
    copy.need_back_to_source = True
    copy.ClearField("range")
    copy.ClearField("output_path")
    return copy


class PeerConversation:
    """The scheduler's side of one AnnouncePeer stream."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.peer: Peer | None = None
        self.download = common_pb2.Download()

    @property
    def peer_id(self) -> str:
        """The registered peer's id ("" before registration)."""
        return self.peer.id if self.peer is not None else ""

    def receive(self, request: scheduler_pb2.AnnouncePeerRequest, now: float) -> Answer | Schedule | None:
        """Take one request (Rules 1, 4, 5); an answer to send, SCHEDULE, or None (nothing to say)."""
        kind = request.WhichOneof("request")
        if kind is None:
            raise InvalidArgument(f"peer {request.peer_id}: an AnnouncePeerRequest without a request")
        if kind == "register_peer_request":
            return self._register(request, now)
        peer = self._registered(request, kind)
        allowed = MESSAGE_STATES.get(kind)
        if allowed is not None and peer.state not in allowed:
            raise FailedPrecondition(f"peer {peer.id}: {kind} while {peer.state.value}")
        peer.updated_at = now
        return self._HANDLERS[kind](self, peer, getattr(request, kind), now)

    def schedule(self, attempt: int, now: float) -> Answer | ScheduleLater | TriggerSeed:
        """Decide attempt number `attempt` (from 1) of finding parents (Rules 2 and 3)."""
        peer = self._current()
        task = self.state.tasks[peer.task_id]
        host = self.state.hosts[peer.host_id]
        if self.download.need_back_to_source:
            return self._back_to_source(peer, f"peer {peer.id}: the download asks for the origin", now)
        parents = self.state.candidate_parents(peer.id)
        if parents:
            self.state.assign_parents(peer.id, parents)
            if peer.state is _S.PENDING:
                peer.move(_S.RECEIVED_NORMAL, now)
            return NormalTask(tuple(parents))
        if host.view.is_seed:
            return self._back_to_source(peer, f"seed peer {peer.id}: task {task.id} has no parent", now)
        seed = self._seed_to_trigger(peer, task)
        if seed is not None:
            task.seed_status = SeedStatus.RUNNING
            return TriggerSeed(task, seed, seed_download(self.download))
        waiting = self._waiting_for_seed(task)
        last = SEED_WAIT_ATTEMPTS if waiting else SCHEDULE_ATTEMPTS
        due = attempt >= last or (not waiting and attempt >= BACK_TO_SOURCE_ATTEMPT)
        room = len(task.back_to_source_peers) < MAX_BACK_TO_SOURCE_PEERS
        if due and room and not self.download.disable_back_to_source:
            why = "the seed did not come" if waiting else "no parent"
            return self._back_to_source(peer, f"peer {peer.id}: {why} after {attempt} attempts", now)
        if attempt >= last:
            raise Unavailable(
                f"peer {peer.id}: no parent for task {task.id} after {attempt} attempts and "
                f"{len(task.back_to_source_peers)} peers already went back to source"
            )
        return SCHEDULE_LATER

    def close(self, now: float) -> None:
        """The stream ended: a peer that did not finish or fail is FAILED (Rule 5)."""
        peer = self.peer
        if peer is None or self.state.peers.get(peer.id) is not peer or peer.state in ENDED:
            return
        self._end(peer, _S.FAILED, now)

    def _register(self, request: scheduler_pb2.AnnouncePeerRequest, now: float) -> Answer | Schedule:
        if self.peer is not None:
            raise FailedPrecondition(f"peer {self.peer.id}: registered twice on one stream")
        if not (request.host_id and request.task_id and request.peer_id):
            raise InvalidArgument(f"peer {request.peer_id!r}: a registration needs host, task and peer ids")
        download = request.register_peer_request.download
        peer = self.state.register_peer(request.peer_id, request.task_id, request.host_id, download.url, now)
        self.peer = peer
        self.download.CopyFrom(download)
        if download.HasField("actual_content_length") and download.actual_content_length == 0:
            peer.move(_S.RECEIVED_EMPTY, now)
            return EmptyTask()
        return SCHEDULE

    def _registered(self, request: scheduler_pb2.AnnouncePeerRequest, kind: str) -> Peer:
        if self.peer is None:
            raise FailedPrecondition(f"peer {request.peer_id}: {kind} before register_peer_request")
        peer = self.peer
        if (request.host_id, request.task_id, request.peer_id) != (peer.host_id, peer.task_id, peer.id):
            raise InvalidArgument(
                f"peer {peer.id}: {kind} names peer {request.peer_id} of task {request.task_id} "
                f"on host {request.host_id}, not the registered one"
            )
        return self._current()

    def _current(self) -> Peer:
        peer = self.peer
        if peer is None:
            raise FailedPrecondition("a peer must register before it is scheduled")
        if self.state.peers.get(peer.id) is not peer:
            raise NotFound(f"peer {peer.id} was deleted while its stream was open")
        return peer

    def _seed_to_trigger(self, peer: Peer, task: Task) -> Host | None:
        if task.seed_status is not SeedStatus.NOT_TRIGGERED:
            return None
        if any(p.state not in (_S.FAILED, _S.LEAVE) for p in self.state.seed_peers(task.id)):
            return None
        seeds = [h for h in self.state.hosts.values() if h.view.is_seed and not h.disable_shared]
        if not seeds:
            return None
        child = self.state.hosts[peer.host_id].view
        return max(seeds, key=lambda h: score(child, h.view))

    def _waiting_for_seed(self, task: Task) -> bool:
        if task.seed_status is not SeedStatus.RUNNING:
            return False
        return not any(p.state in SERVING_STATES for p in self.state.seed_peers(task.id))

    def _back_to_source(self, peer: Peer, description: str, now: float) -> BackToSource:
        if peer.state is _S.PENDING:
            peer.move(_S.RECEIVED_BACK_TO_SOURCE, now)
        return BackToSource(description)

    def _end(self, peer: Peer, target: PeerState, now: float) -> None:
        peer.move(target, now)
        host = self.state.hosts.get(peer.host_id)
        task = self.state.tasks.get(peer.task_id)
        if host is not None and host.view.is_seed and task is not None:
            task.settle_seed(target is _S.SUCCEEDED)

    def _started(self, peer: Peer, message: object, now: float) -> None:
        peer.move(_S.RUNNING, now)

    def _back_to_source_started(self, peer: Peer, message: object, now: float) -> None:
        peer.move(_S.BACK_TO_SOURCE, now)
        self.state.tasks[peer.task_id].back_to_source_peers.add(peer.id)

    def _piece_finished(self, peer: Peer, message: Any, now: float) -> None:
        piece = message.piece  # of a piece from a parent or, without parent_id, from the origin
        peer.finished_pieces.add(piece.number)
        if piece.HasField("parent_id") and piece.parent_id:
            cost = piece.cost.ToTimedelta().total_seconds()
            peer.piece_costs.setdefault(piece.parent_id, []).append(cost)
            parent = self.state.peers.get(piece.parent_id)
            if parent is not None:
                parent.upload_costs.append(cost)

    def _piece_failed(
        self, peer: Peer, message: scheduler_pb2.DownloadPieceFailedRequest, now: float
    ) -> None:
        if message.parent_id:
            self._block(peer, [message.parent_id])

    def _reschedule(self, peer: Peer, message: scheduler_pb2.ReschedulePeerRequest, now: float) -> Schedule:
        self._block(peer, [p.id for p in message.candidate_parents if p.id])
        return SCHEDULE

    def _block(self, peer: Peer, parent_ids: list[str]) -> None:
        peer.blocked_parents.update(parent_ids)
        self.state.tasks[peer.task_id].dag.delete_edges_into(peer.id, parent_ids)

    def _finished(self, peer: Peer, message: object, now: float) -> None:
        self._end(peer, _S.SUCCEEDED, now)
        task = self.state.tasks[peer.task_id]
        download = self.download
        if download.HasField("actual_content_length"):
            task.content_length = download.actual_content_length
        if download.HasField("actual_piece_length"):
            task.piece_length = download.actual_piece_length
        if download.HasField("actual_piece_count"):
            task.piece_count = download.actual_piece_count

    def _failed(self, peer: Peer, message: object, now: float) -> None:
        self._end(peer, _S.FAILED, now)

    _HANDLERS: dict[str, Callable[..., Answer | Schedule | None]] = {
        "download_peer_started_request": _started,
        "download_peer_back_to_source_started_request": _back_to_source_started,
        "reschedule_peer_request": _reschedule,
        "download_peer_finished_request": _finished,
        "download_peer_back_to_source_finished_request": _finished,
        "download_peer_failed_request": _failed,
        "download_peer_back_to_source_failed_request": _failed,
        "download_piece_finished_request": _piece_finished,
        "download_piece_back_to_source_finished_request": _piece_finished,
        "download_piece_failed_request": _piece_failed,
        "download_piece_back_to_source_failed_request": lambda self, peer, message, now: None,
    }
