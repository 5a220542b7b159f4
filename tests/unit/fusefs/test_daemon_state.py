"""The fusefs daemon lifecycle table: every row of TRANSITIONS, legal and illegal."""

import itertools

import pytest

from lazyfly.fusefs.daemon_state import TRANSITIONS, DaemonLifecycle, DaemonState, InvalidTransition

ALL_MOVES = list(itertools.product(DaemonState, DaemonState))


def lifecycle_in(state: DaemonState) -> DaemonLifecycle:
    lifecycle = DaemonLifecycle()
    lifecycle.state = state
    return lifecycle


def test_a_daemon_starts_in_init():
    assert DaemonLifecycle().state is DaemonState.INIT


def test_the_table_covers_every_state():
    assert set(TRANSITIONS) == set(DaemonState)


@pytest.mark.parametrize(("start", "to"), [m for m in ALL_MOVES if m[1] in TRANSITIONS[m[0]]])
def test_a_legal_move_changes_the_state(start: DaemonState, to: DaemonState):
    lifecycle = lifecycle_in(start)
    lifecycle.move(to)
    assert lifecycle.state is to


@pytest.mark.parametrize(("start", "to"), [m for m in ALL_MOVES if m[1] not in TRANSITIONS[m[0]]])
def test_an_illegal_move_raises_and_keeps_the_state(start: DaemonState, to: DaemonState):
    lifecycle = lifecycle_in(start)
    with pytest.raises(InvalidTransition, match=f"from {start.value} to {to.value}"):
        lifecycle.move(to)
    assert lifecycle.state is start


def test_the_normal_life_and_the_failed_start():
    normal = DaemonLifecycle()
    for state in (DaemonState.RUNNING, DaemonState.STOPPING, DaemonState.STOPPED):
        normal.move(state)
    failed = DaemonLifecycle()
    failed.move(DaemonState.STOPPING)
    failed.move(DaemonState.STOPPED)
    assert normal.state is failed.state is DaemonState.STOPPED


@pytest.mark.parametrize("state", list(DaemonState))
def test_only_a_running_daemon_accepts_images(state: DaemonState):
    assert lifecycle_in(state).accepts_images is (state is DaemonState.RUNNING)
