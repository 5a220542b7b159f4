"""The scheduler's picture of the cluster: hosts, tasks and peers, in memory (pure, no I/O).

Rules:
- Rule 1: a peer registers only on an announced host; deleting a host deletes its peers.
- Rule 2: each task keeps its peers in a PeerDag; a peer's parents are edges of that DAG, so no
  assignment can make a cycle.
- Rule 3: candidate parents of a peer: peers of the same task that are running or succeeded, never
  the peer itself or a peer on its own host, never a blocklisted or failed parent, never a host
  with sharing disabled, never one that would close a cycle, never a bad parent (evaluator.is_bad_parent
  on the costs of the pieces it served to any child, or to this child); SAMPLE_SIZE of them (peers
  holding the most pieces first) are scored by evaluator.score and the best CANDIDATE_COUNT answered.
- Rule 4: a task is seeded at most once: `seed_status` leaves NOT_TRIGGERED once, and only the seed
  trigger or the seed peer's own report settles it.
- Rule 5: `collect_garbage` drops peers idle for longer than a TTL, tasks without peers and hosts
  not announced within theirs.
"""

import enum
from collections import deque
from dataclasses import dataclass, field

from lazyfly.errors import FailedPrecondition, NotFound
from lazyfly.scheduler.dag import PeerDag
from lazyfly.scheduler.evaluator import HostView, is_bad_parent, score
from lazyfly.scheduler.peer_state import PeerState, check_transition

SAMPLE_SIZE = 15
CANDIDATE_COUNT = 3
UPLOAD_COST_WINDOW = 200  # the last piece costs kept per parent for bad-parent detection
SERVING_STATES = frozenset({PeerState.RUNNING, PeerState.BACK_TO_SOURCE, PeerState.SUCCEEDED})


@dataclass
class Host:
    """An announced host (a peer daemon or a seed peer)."""

    id: str
    ip: str
    hostname: str
    view: HostView = field(default_factory=HostView)
    vortex_port: int = 4005
    upload_port: int = 4000
    disable_shared: bool = False
    announced_at: float = 0.0


@dataclass
class Peer:
    """One download of a task by a host."""

    id: str
    task_id: str
    host_id: str
    state: PeerState = PeerState.PENDING
    finished_pieces: set[int] = field(default_factory=set)
    blocked_parents: set[str] = field(default_factory=set)
    piece_costs: dict[str, list[float]] = field(default_factory=dict)  # parent id -> costs
    upload_costs: deque[float] = field(default_factory=lambda: deque(maxlen=UPLOAD_COST_WINDOW))
    updated_at: float = 0.0

    def move(self, target: PeerState, now: float) -> None:
        """Change state as the transition table allows."""
        self.state = check_transition(self.id, self.state, target)
        self.updated_at = now


class SeedStatus(enum.Enum):
    """Whether a seed peer was asked to download a task (Rule 4)."""

    NOT_TRIGGERED = "NotTriggered"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass
class Task:
    """A task and the peers downloading or holding it."""

    id: str
    url: str = ""
    content_length: int | None = None
    piece_length: int | None = None
    piece_count: int | None = None
    dag: PeerDag = field(default_factory=PeerDag)
    back_to_source_peers: set[str] = field(default_factory=set)
    seed_status: SeedStatus = SeedStatus.NOT_TRIGGERED

    def settle_seed(self, succeeded: bool) -> None:
        """Record how the seed download ended, if it is still running (Rule 4)."""
        if self.seed_status is SeedStatus.RUNNING:
            self.seed_status = SeedStatus.SUCCEEDED if succeeded else SeedStatus.FAILED


class ClusterState:
    """Hosts, tasks and peers."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self.tasks: dict[str, Task] = {}
        self.peers: dict[str, Peer] = {}

    def announce_host(self, host: Host) -> None:
        """Add or refresh a host."""
        self.hosts[host.id] = host

    def delete_host(self, host_id: str) -> None:
        """Forget a host and its peers (Rule 1)."""
        self.hosts.pop(host_id, None)
        for peer in [p for p in self.peers.values() if p.host_id == host_id]:
            self.delete_peer(peer.id)

    def register_peer(self, peer_id: str, task_id: str, host_id: str, url: str, now: float) -> Peer:
        """Add a peer of a task on an announced host (Rule 1); a known peer starts over."""
        if host_id not in self.hosts:
            raise FailedPrecondition(f"peer {peer_id}: host {host_id} was not announced")
        task = self.tasks.setdefault(task_id, Task(task_id, url))
        peer = self.peers.get(peer_id)
        if peer is None:
            peer = self.peers[peer_id] = Peer(peer_id, task_id, host_id, updated_at=now)
            task.dag.add_peer(peer_id)
        else:
            peer.move(PeerState.PENDING, now)
            task.dag.delete_edges_into(peer_id)
        return peer

    def delete_peer(self, peer_id: str) -> None:
        """Forget a peer and its edges."""
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return
        task = self.tasks.get(peer.task_id)
        if task is not None:
            task.dag.delete_peer(peer_id)
            task.back_to_source_peers.discard(peer_id)

    def peer(self, peer_id: str) -> Peer:
        """A known peer; NotFound otherwise."""
        peer = self.peers.get(peer_id)
        if peer is None:
            raise NotFound(f"peer {peer_id} is not known")
        return peer

    def holders(self, task_id: str) -> list[Peer]:
        """The peers that can serve pieces of a task (running or succeeded)."""
        task = self.tasks.get(task_id)
        if task is None:
            return []
        return [self.peers[p] for p in task.dag.peers() if self.peers[p].state in SERVING_STATES]

    def seed_peers(self, task_id: str) -> list[Peer]:
        """The peers of a task that run on seed hosts."""
        task = self.tasks.get(task_id)
        if task is None:
            return []
        peers = [self.peers[p] for p in task.dag.peers()]
        return [p for p in peers if p.host_id in self.hosts and self.hosts[p.host_id].view.is_seed]

    def candidate_parents(self, peer_id: str) -> list[Peer]:
        """The best parents for a peer (Rule 3)."""
        peer = self.peer(peer_id)
        task = self.tasks[peer.task_id]
        child_host = self.hosts[peer.host_id]
        eligible = []
        for other in self.holders(peer.task_id):
            host = self.hosts.get(other.host_id)
            if (
                host is None
                or other.id == peer.id
                or other.host_id == peer.host_id
                or other.id in peer.blocked_parents
                or host.disable_shared
                or not task.dag.can_add_edge(other.id, peer.id)
                or is_bad_parent(other.upload_costs)
                or is_bad_parent(peer.piece_costs.get(other.id, ()))
            ):
                continue
            eligible.append(other)
        eligible.sort(key=lambda p: (p.state is not PeerState.SUCCEEDED, -len(p.finished_pieces)))
        sample = eligible[:SAMPLE_SIZE]
        sample.sort(key=lambda p: score(child_host.view, self.hosts[p.host_id].view), reverse=True)
        return sample[:CANDIDATE_COUNT]

    def assign_parents(self, peer_id: str, parents: list[Peer]) -> None:
        """Record `parents` as the peer's parents in the task's DAG (replacing the old ones)."""
        peer = self.peer(peer_id)
        dag = self.tasks[peer.task_id].dag
        dag.delete_edges_into(peer_id)
        for parent in parents:
            dag.add_edge(parent.id, peer_id)

    def collect_garbage(self, now: float, peer_ttl: float, host_ttl: float) -> None:
        """Drop idle peers, empty tasks and silent hosts (Rule 5)."""
        for peer in [p for p in self.peers.values() if now - p.updated_at > peer_ttl]:
            self.delete_peer(peer.id)
        for host in [h for h in self.hosts.values() if now - h.announced_at > host_ttl]:
            self.delete_host(host.id)
        for task_id in [t.id for t in self.tasks.values() if not len(t.dag)]:
            del self.tasks[task_id]
