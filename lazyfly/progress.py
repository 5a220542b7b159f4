"""Progress reporting for long transfers: a small sink protocol and two implementations.

Rule: library code only ever calls `add_total(n)` and `advance(n)` on a `ProgressSink`; whether
anything is drawn is the caller's choice. `RichProgress` draws bytes, throughput and ETA on stderr
and stays silent when stderr is not a terminal, so logs and pipes never fill with bars.
"""

import sys
from types import TracebackType
from typing import Protocol, runtime_checkable

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@runtime_checkable
class ProgressSink(Protocol):
    """Receives the total amount of work as it becomes known, and the work done."""

    def add_total(self, n: int) -> None:
        """Add `n` bytes to the expected total."""

    def advance(self, n: int) -> None:
        """Record that `n` more bytes are done."""


class NullProgress:
    """A sink that ignores everything."""

    def add_total(self, n: int) -> None:
        """Ignore `n`."""

    def advance(self, n: int) -> None:
        """Ignore `n`."""


class RichProgress:
    """A byte progress bar on stderr; use as `with RichProgress("pulling") as progress:`."""

    def __init__(self, description: str) -> None:
        console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not sys.stderr.isatty(),
            transient=False,
        )
        self._task: TaskID = self._progress.add_task(description, total=0)
        self._total = 0

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def add_total(self, n: int) -> None:
        """Add `n` bytes to the bar's total."""
        self._total += n
        self._progress.update(self._task, total=self._total)

    def advance(self, n: int) -> None:
        """Move the bar by `n` bytes."""
        self._progress.advance(self._task, n)
