import pytest

from lazyfly.errors import FailedPrecondition
from lazyfly.scheduler.cluster_state import CANDIDATE_COUNT, ClusterState, Host
from lazyfly.scheduler.evaluator import HostView
from lazyfly.scheduler.peer_state import PeerState

TASK = "t" * 64


def cluster_with(hosts: dict[str, HostView], **shared: bool) -> ClusterState:
    state = ClusterState()
    for host_id, view in hosts.items():
        state.announce_host(
            Host(host_id, "10.0.0.1", host_id, view, disable_shared=shared.get(host_id, False))
        )
    return state


def running(state: ClusterState, peer_id: str, host_id: str, pieces: int = 0):
    peer = state.register_peer(peer_id, TASK, host_id, "http://o/blob", now=0)
    peer.move(PeerState.RECEIVED_NORMAL, 0)
    peer.move(PeerState.RUNNING, 0)
    peer.finished_pieces = set(range(pieces))
    return peer


def test_a_peer_registers_only_on_an_announced_host():
    with pytest.raises(FailedPrecondition, match="host h1"):
        ClusterState().register_peer("p", TASK, "h1", "http://o/blob", now=0)


def test_candidates_exclude_the_peer_its_host_blocked_and_unshared_parents_and_keep_the_best_three():
    views = {f"h{i}": HostView(idc="dc1" if i % 2 else "dc2") for i in range(8)}
    state = cluster_with(views, h7=True)
    for i in range(1, 8):
        running(state, f"p{i}", f"h{i}", pieces=i)
    state.register_peer("sibling", TASK, "h0", "http://o/blob", now=0).move(PeerState.RECEIVED_NORMAL, 0)
    child = state.register_peer("child", TASK, "h0", "http://o/blob", now=0)
    child.blocked_parents.add("p5")
    chosen = [p.id for p in state.candidate_parents("child")]
    assert len(chosen) == CANDIDATE_COUNT
    assert not {"child", "sibling", "p5", "p7"} & set(chosen)


def test_a_parent_that_would_close_a_cycle_is_never_a_candidate():
    state = cluster_with({"h1": HostView(), "h2": HostView()})
    a = running(state, "a", "h1")
    running(state, "b", "h2")
    state.assign_parents("b", [a])
    assert [p.id for p in state.candidate_parents("a")] == []
    assert [p.id for p in state.candidate_parents("b")] == ["a"]


def test_deleting_a_host_deletes_its_peers_and_garbage_collection_drops_the_idle():
    state = cluster_with({"h1": HostView(), "h2": HostView()})
    running(state, "a", "h1")
    running(state, "b", "h2").updated_at = 100
    state.delete_host("h1")
    assert set(state.peers) == {"b"}
    state.hosts["h2"].announced_at = 100
    state.collect_garbage(now=150, peer_ttl=60, host_ttl=60)
    assert set(state.peers) == {"b"} and TASK in state.tasks
    state.collect_garbage(now=1000, peer_ttl=60, host_ttl=60)
    assert state.peers == {} and state.tasks == {} and state.hosts == {}
