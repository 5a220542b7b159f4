"""A peer's lifecycle as the scheduler sees it: an enum and one transition table (STYLE 4).

PENDING → (registered) RECEIVED_EMPTY | RECEIVED_NORMAL | RECEIVED_BACK_TO_SOURCE → RUNNING or
BACK_TO_SOURCE → SUCCEEDED | FAILED; any state → LEAVE when the peer goes away. A failed or
succeeded peer may be registered again (a new download of the same task). A peer told its task is
empty may still say it started (RECEIVED_EMPTY → RUNNING), as Dragonfly's peers do.
"""

import enum

from lazyfly.errors import FailedPrecondition


class PeerState(enum.Enum):
    """Where a peer is in its download."""

    PENDING = "Pending"
    RECEIVED_EMPTY = "ReceivedEmpty"
    RECEIVED_NORMAL = "ReceivedNormal"
    RECEIVED_BACK_TO_SOURCE = "ReceivedBackToSource"
    RUNNING = "Running"
    BACK_TO_SOURCE = "BackToSource"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    LEAVE = "Leave"


class InvalidTransition(FailedPrecondition):
    """A peer was asked to move where its state does not lead."""


_S = PeerState
TRANSITIONS: dict[PeerState, frozenset[PeerState]] = {
    _S.PENDING: frozenset(
        {_S.RECEIVED_EMPTY, _S.RECEIVED_NORMAL, _S.RECEIVED_BACK_TO_SOURCE, _S.FAILED, _S.LEAVE}
    ),
    _S.RECEIVED_EMPTY: frozenset({_S.RUNNING, _S.SUCCEEDED, _S.FAILED, _S.LEAVE}),
    _S.RECEIVED_NORMAL: frozenset({_S.RUNNING, _S.BACK_TO_SOURCE, _S.FAILED, _S.LEAVE}),
    _S.RECEIVED_BACK_TO_SOURCE: frozenset({_S.BACK_TO_SOURCE, _S.FAILED, _S.LEAVE}),
    _S.RUNNING: frozenset({_S.RUNNING, _S.BACK_TO_SOURCE, _S.SUCCEEDED, _S.FAILED, _S.LEAVE}),
    _S.BACK_TO_SOURCE: frozenset({_S.SUCCEEDED, _S.FAILED, _S.LEAVE}),
    _S.SUCCEEDED: frozenset({_S.PENDING, _S.LEAVE}),
    _S.FAILED: frozenset({_S.PENDING, _S.LEAVE}),
    _S.LEAVE: frozenset(),
}


def check_transition(peer_id: str, current: PeerState, target: PeerState) -> PeerState:
    """`target` if the table allows current → target; InvalidTransition naming the peer otherwise."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"peer {peer_id}: cannot go from {current.value} to {target.value}")
    return target
