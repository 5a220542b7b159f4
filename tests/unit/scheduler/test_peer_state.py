import pytest

from lazyfly.scheduler.peer_state import TRANSITIONS, InvalidTransition, PeerState, check_transition


@pytest.mark.parametrize(
    ("current", "target"),
    [(current, target) for current, targets in TRANSITIONS.items() for target in targets],
)
def test_every_row_of_the_table_is_a_move_a_peer_can_make(current, target):
    assert check_transition("p", current, target) is target


@pytest.mark.parametrize(
    ("current", "target"),
    [(state, target) for state in PeerState for target in PeerState if target not in TRANSITIONS[state]],
)
def test_every_move_outside_the_table_is_refused_naming_the_peer(current, target):
    with pytest.raises(InvalidTransition, match="peer p"):
        check_transition("p", current, target)
