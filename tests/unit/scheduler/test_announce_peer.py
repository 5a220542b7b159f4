import pytest
from dragonfly_api import common_pb2, scheduler_pb2
from google.protobuf import duration_pb2

from lazyfly.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from lazyfly.scheduler.announce_peer import (
    BACK_TO_SOURCE_ATTEMPT,
    MAX_BACK_TO_SOURCE_PEERS,
    SCHEDULE,
    SCHEDULE_ATTEMPTS,
    SCHEDULE_LATER,
    SEED_WAIT_ATTEMPTS,
    BackToSource,
    EmptyTask,
    NormalTask,
    PeerConversation,
    TriggerSeed,
)
from lazyfly.scheduler.cluster_state import ClusterState, Host, SeedStatus
from lazyfly.scheduler.evaluator import HostView
from lazyfly.scheduler.peer_state import PeerState

TASK = "t" * 64
URL = "http://origin/blob"


def cluster(*hosts: str, seeds: tuple[str, ...] = ()) -> ClusterState:
    state = ClusterState()
    for host_id in (*hosts, *seeds):
        state.announce_host(Host(host_id, "10.0.0.1", host_id, HostView(is_seed=host_id in seeds)))
    return state


def request(peer: str, host: str, task: str = TASK, **body) -> scheduler_pb2.AnnouncePeerRequest:
    return scheduler_pb2.AnnouncePeerRequest(host_id=host, task_id=task, peer_id=peer, **body)


def register(peer: str, host: str, length: int = 8 << 20, **download) -> scheduler_pb2.AnnouncePeerRequest:
    body = common_pb2.Download(url=URL, actual_content_length=length, actual_piece_length=4 << 20, **download)
    return request(peer, host, register_peer_request=scheduler_pb2.RegisterPeerRequest(download=body))


def bare(peer: str, host: str, kind: str) -> scheduler_pb2.AnnouncePeerRequest:
    """A request whose body `kind` has no fields."""
    message = request(peer, host)
    getattr(message, kind).SetInParent()
    return message


def started(peer: str, host: str, back_to_source: bool = False) -> scheduler_pb2.AnnouncePeerRequest:
    via = "_back_to_source" if back_to_source else ""
    return bare(peer, host, f"download_peer{via}_started_request")


def piece_finished(peer: str, host: str, number: int, parent: str, cost: float = 0.1):
    piece = common_pb2.Piece(
        number=number, parent_id=parent, length=4 << 20, cost=duration_pb2.Duration(nanos=int(cost * 1e9))
    )
    return request(
        peer, host, download_piece_finished_request=scheduler_pb2.DownloadPieceFinishedRequest(piece=piece)
    )


def finished(peer: str, host: str, back_to_source: bool = False) -> scheduler_pb2.AnnouncePeerRequest:
    via = "_back_to_source" if back_to_source else ""
    return bare(peer, host, f"download_peer{via}_finished_request")


def holder(state: ClusterState, peer: str, host: str) -> PeerConversation:
    """A peer that went back to source and finished: a holder of TASK."""
    talk = PeerConversation(state)
    assert talk.receive(register(peer, host, need_back_to_source=True), 0) is SCHEDULE
    assert isinstance(talk.schedule(1, 0), BackToSource)
    talk.receive(started(peer, host, back_to_source=True), 0)
    talk.receive(finished(peer, host, back_to_source=True), 0)
    return talk


def test_a_task_of_length_zero_is_answered_empty_and_then_succeeds():
    state = cluster("h1")
    talk = PeerConversation(state)
    assert talk.receive(register("p1", "h1", length=0), 0) == EmptyTask()
    assert state.peers["p1"].state is PeerState.RECEIVED_EMPTY
    assert talk.receive(started("p1", "h1"), 0) is None
    talk.receive(finished("p1", "h1"), 0)
    assert state.peers["p1"].state is PeerState.SUCCEEDED


def test_a_peer_on_an_unknown_host_cannot_register():
    with pytest.raises(FailedPrecondition, match="host h9"):
        PeerConversation(cluster("h1")).receive(register("p1", "h9"), 0)


def test_a_download_that_asks_for_the_origin_goes_back_to_source_at_once_and_is_counted():
    state = cluster("h1")
    talk = PeerConversation(state)
    assert talk.receive(register("p1", "h1", need_back_to_source=True), 0) is SCHEDULE
    assert isinstance(talk.schedule(1, 0), BackToSource)
    assert state.peers["p1"].state is PeerState.RECEIVED_BACK_TO_SOURCE
    talk.receive(started("p1", "h1", back_to_source=True), 0)
    assert state.tasks[TASK].back_to_source_peers == {"p1"}


def test_a_seed_peer_without_parents_goes_back_to_source_at_once():
    state = cluster(seeds=("seed",))
    talk = PeerConversation(state)
    talk.receive(register("s1", "seed"), 0)
    assert isinstance(talk.schedule(1, 0), BackToSource)
    assert state.tasks[TASK].seed_status is SeedStatus.NOT_TRIGGERED


def test_a_normal_peer_without_parents_or_seed_waits_then_goes_back_to_source_from_attempt_four():
    state = cluster("h1")
    talk = PeerConversation(state)
    talk.receive(register("p1", "h1"), 0)
    for attempt in range(1, BACK_TO_SOURCE_ATTEMPT):
        assert talk.schedule(attempt, 0) is SCHEDULE_LATER
    assert isinstance(talk.schedule(BACK_TO_SOURCE_ATTEMPT, 0), BackToSource)


@pytest.mark.parametrize("why", ["task has its back-to-source peers", "download disables the origin"])
def test_a_peer_that_may_not_go_to_the_origin_fails_after_the_last_attempt(why):
    state = cluster("h1")
    talk = PeerConversation(state)
    talk.receive(register("p1", "h1", disable_back_to_source=why.startswith("download")), 0)
    if why.startswith("task"):
        state.tasks[TASK].back_to_source_peers.update(f"x{i}" for i in range(MAX_BACK_TO_SOURCE_PEERS))
    assert talk.schedule(SCHEDULE_ATTEMPTS - 1, 0) is SCHEDULE_LATER
    with pytest.raises(Unavailable, match="peer p1"):
        talk.schedule(SCHEDULE_ATTEMPTS, 0)


def test_a_second_peer_gets_the_holder_as_parent_recorded_in_the_dag():
    state = cluster("h1", "h2")
    holder(state, "p1", "h1")
    talk = PeerConversation(state)
    talk.receive(register("p2", "h2"), 0)
    answer = talk.schedule(1, 0)
    assert isinstance(answer, NormalTask) and [p.id for p in answer.parents] == ["p1"]
    assert state.tasks[TASK].dag.parents("p2") == {"p1"}
    assert state.peers["p2"].state is PeerState.RECEIVED_NORMAL


def test_a_finished_holder_stays_a_holder_after_its_stream_closes_and_teaches_the_task_its_size():
    state = cluster("h1")
    holder(state, "p1", "h1").close(0)
    assert state.peers["p1"].state is PeerState.SUCCEEDED
    assert (state.tasks[TASK].content_length, state.tasks[TASK].piece_length) == (8 << 20, 4 << 20)


@pytest.mark.parametrize("answered", [False, True])
def test_a_stream_that_ends_before_finishing_leaves_its_peer_failed_never_running(answered):
    state = cluster("h1", "h2")
    holder(state, "p1", "h1")
    talk = PeerConversation(state)
    talk.receive(register("p2", "h2"), 0)
    if answered:
        talk.schedule(1, 0)
        talk.receive(started("p2", "h2"), 0)
    talk.close(0)
    assert state.peers["p2"].state is PeerState.FAILED
    assert "p2" not in [p.id for p in state.holders(TASK)]


def test_finished_pieces_are_counted_and_their_costs_kept_per_parent():
    state = cluster("h1", "h2")
    holder(state, "p1", "h1")
    talk = PeerConversation(state)
    talk.receive(register("p2", "h2"), 0)
    talk.schedule(1, 0)
    talk.receive(started("p2", "h2"), 0)
    talk.receive(piece_finished("p2", "h2", 0, "p1", cost=0.25), 0)
    talk.receive(piece_finished("p2", "h2", 1, "p1", cost=0.5), 0)
    child = state.peers["p2"]
    assert child.finished_pieces == {0, 1}
    assert child.piece_costs == {"p1": [0.25, 0.5]}
    assert list(state.peers["p1"].upload_costs) == [0.25, 0.5]


def test_a_failed_piece_blocklists_its_parent_for_that_peer():
    state = cluster("h1", "h2")
    holder(state, "p1", "h1")
    talk = PeerConversation(state)
    talk.receive(register("p2", "h2"), 0)
    talk.schedule(1, 0)
    talk.receive(started("p2", "h2"), 0)
    failed = scheduler_pb2.DownloadPieceFailedRequest(piece_number=3, parent_id="p1", temporary=True)
    talk.receive(request("p2", "h2", download_piece_failed_request=failed), 0)
    assert state.peers["p2"].blocked_parents == {"p1"}
    assert state.tasks[TASK].dag.parents("p2") == set()


def test_reschedule_blocklists_the_named_parents_and_answers_with_others():
    state = cluster("h1", "h2", "h3")
    holder(state, "p1", "h1")
    holder(state, "p3", "h3")
    talk = PeerConversation(state)
    talk.receive(register("p2", "h2"), 0)
    assert {p.id for p in talk.schedule(1, 0).parents} == {"p1", "p3"}
    talk.receive(started("p2", "h2"), 0)
    reschedule = scheduler_pb2.ReschedulePeerRequest(candidate_parents=[common_pb2.Peer(id="p1")])
    assert talk.receive(request("p2", "h2", reschedule_peer_request=reschedule), 0) is SCHEDULE
    answer = talk.schedule(1, 0)
    assert [p.id for p in answer.parents] == ["p3"]
    assert state.tasks[TASK].dag.parents("p2") == {"p3"}
    reschedule = scheduler_pb2.ReschedulePeerRequest(candidate_parents=[common_pb2.Peer(id="p3")])
    talk.receive(request("p2", "h2", reschedule_peer_request=reschedule), 0)
    assert talk.schedule(1, 0) is SCHEDULE_LATER
    assert isinstance(talk.schedule(BACK_TO_SOURCE_ATTEMPT, 0), BackToSource)
    assert state.peers["p2"].state is PeerState.RUNNING  # told to go to the origin, not moved yet


def test_failures_move_the_peer_to_failed():
    state = cluster("h1")
    talk = PeerConversation(state)
    talk.receive(register("p1", "h1", need_back_to_source=True), 0)
    talk.schedule(1, 0)
    talk.receive(started("p1", "h1", back_to_source=True), 0)
    failed = scheduler_pb2.DownloadPeerBackToSourceFailedRequest(description="origin 500")
    talk.receive(request("p1", "h1", download_peer_back_to_source_failed_request=failed), 0)
    assert state.peers["p1"].state is PeerState.FAILED
    assert not state.holders(TASK)


def test_a_normal_peer_of_an_unheld_task_triggers_the_seed_once_and_gets_it_as_parent():
    state = cluster("h1", "h2", seeds=("seed",))
    talk = PeerConversation(state)
    talk.receive(register("p1", "h1", range=common_pb2.Range(start=0, length=10)), 0)
    trigger = talk.schedule(1, 0)
    assert isinstance(trigger, TriggerSeed) and trigger.host.id == "seed"
    assert trigger.download.need_back_to_source and trigger.download.url == URL
    assert not trigger.download.HasField("range")
    other = PeerConversation(state)
    other.receive(register("p2", "h2"), 0)
    assert other.schedule(1, 0) is SCHEDULE_LATER  # no second trigger
    assert talk.schedule(1, 0) is SCHEDULE_LATER
    assert talk.schedule(BACK_TO_SOURCE_ATTEMPT, 0) is SCHEDULE_LATER  # waits longer for the seed
    seed = PeerConversation(state)
    seed.receive(register("s1", "seed", need_back_to_source=True), 0)
    seed.schedule(1, 0)
    seed.receive(started("s1", "seed", back_to_source=True), 0)
    assert [p.id for p in talk.schedule(5, 0).parents] == ["s1"]
    seed.receive(finished("s1", "seed", back_to_source=True), 0)
    assert state.tasks[TASK].seed_status is SeedStatus.SUCCEEDED


def test_waiting_for_the_seed_ends_with_back_to_source_when_it_fails_or_never_comes():
    state = cluster("h1", seeds=("seed",))
    talk = PeerConversation(state)
    talk.receive(register("p1", "h1"), 0)
    assert isinstance(talk.schedule(1, 0), TriggerSeed)
    assert talk.schedule(SEED_WAIT_ATTEMPTS - 1, 0) is SCHEDULE_LATER
    assert isinstance(talk.schedule(SEED_WAIT_ATTEMPTS, 0), BackToSource)
    state.tasks[TASK].settle_seed(False)
    assert isinstance(talk.schedule(BACK_TO_SOURCE_ATTEMPT, 0), BackToSource)


@pytest.mark.parametrize(
    ("first", "error"),
    [
        (lambda: started("p1", "h1"), FailedPrecondition),
        (lambda: piece_finished("p1", "h1", 0, "p0"), FailedPrecondition),
        (lambda: request("p1", "h1"), InvalidArgument),
    ],
)
def test_a_message_before_registration_is_refused_naming_the_peer(first, error):
    with pytest.raises(error, match="peer p1"):
        PeerConversation(cluster("h1")).receive(first(), 0)


def test_out_of_order_messages_and_forbidden_moves_are_refused_naming_the_peer():
    state = cluster("h1", "h2")
    holder(state, "p1", "h1")
    talk = PeerConversation(state)
    talk.receive(register("p2", "h2"), 0)
    talk.schedule(1, 0)
    with pytest.raises(FailedPrecondition, match="peer p2: download_piece_finished_request while"):
        talk.receive(piece_finished("p2", "h2", 0, "p1"), 0)  # before download_peer_started
    with pytest.raises(FailedPrecondition, match="peer p2"):
        talk.receive(finished("p2", "h2"), 0)  # ReceivedNormal cannot become Succeeded
    with pytest.raises(FailedPrecondition, match="peer p2: registered twice"):
        talk.receive(register("p2", "h2"), 0)
    with pytest.raises(InvalidArgument, match="peer p2"):
        talk.receive(started("p9", "h2"), 0)


def test_a_peer_deleted_while_its_stream_is_open_is_not_found():
    state = cluster("h1")
    talk = PeerConversation(state)
    talk.receive(register("p1", "h1"), 0)
    state.delete_peer("p1")
    with pytest.raises(NotFound, match="peer p1"):
        talk.receive(started("p1", "h1"), 0)
    talk.close(0)  # nothing left to mark


def test_a_bad_parent_is_not_offered():
    state = cluster("h1", "h2", "h3")
    holder(state, "p1", "h1")
    holder(state, "p3", "h3")
    state.peers["p1"].upload_costs.extend([0.1, 0.1, 0.1, 5.0])  # last piece 50x the mean
    talk = PeerConversation(state)
    talk.receive(register("p2", "h2"), 0)
    assert [p.id for p in talk.schedule(1, 0).parents] == ["p3"]
