"""The lifecycle of the `lazyfly fusefs` daemon as a table (STYLE 4; nydus DaemonStateMachine).

    INIT ──► RUNNING ──► STOPPING ──► STOPPED
      └──────────────────────┘

Rules:
- Rule 1: a move not in TRANSITIONS raises InvalidTransition naming both states; moving to the
  current state is illegal too, so a double stop is a bug that shows.
- Rule 2: INIT → STOPPING is the path of a daemon that failed before it served (mount or socket
  error); its cleanup still runs and ends in STOPPED.
- Rule 3: images are added only in RUNNING (`accepts_images`); STOPPING refuses new ones while the
  served ones are closed.
"""

import enum

from lazyfly.errors import FailedPrecondition


class InvalidTransition(FailedPrecondition):
    """A lifecycle move that the transition table does not allow."""


class DaemonState(enum.Enum):
    """Where the daemon is in its life; the value is what GET /api/v1/daemon reports."""

    INIT = "INIT"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


TRANSITIONS: dict[DaemonState, frozenset[DaemonState]] = {
    DaemonState.INIT: frozenset({DaemonState.RUNNING, DaemonState.STOPPING}),
    DaemonState.RUNNING: frozenset({DaemonState.STOPPING}),
    DaemonState.STOPPING: frozenset({DaemonState.STOPPED}),
    DaemonState.STOPPED: frozenset(),
}


class DaemonLifecycle:
    """The current state of one daemon and its legal moves."""

    def __init__(self) -> None:
        self.state = DaemonState.INIT

    def move(self, to: DaemonState) -> None:
        """Go to state `to`, or raise InvalidTransition (Rule 1)."""
        if to not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"fusefs daemon: cannot go from {self.state.value} to {to.value}")
        self.state = to

    @property
    def accepts_images(self) -> bool:
        """True while images may be added (Rule 3)."""
        return self.state is DaemonState.RUNNING
