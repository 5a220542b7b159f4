"""What a peer knows of one task while it is downloaded: its size, the pieces stored, how it ended.

Every part of the peer that waits for pieces reads this one object: the proxy streaming a range in
order, SyncPieces telling children about pieces as they land, and DownloadTask reporting progress.

Rules:
- Rule 1: a piece is `add`ed only after the piece store recorded it (bytes written and checked).
- Rule 2: waiters wake on every change (a piece, the start, the end); `wait_piece` returns once the
  piece is stored and raises the download's error, or NotFound when every download of the task
  ended without it (a range download that did not cover it), so no reader waits forever.
- Rule 3: a piece a reader waits for is `urgent` while it waits: the downloads fetch urgent pieces
  before the others, so a read far into a blob does not queue behind a prefetch of the whole.
- Rule 4: `runs` counts the downloads in flight and `readers` the requests reading the task; a
  task with either is in use and the disk GC leaves it alone.
"""

from collections.abc import Iterable

import anyio

from lazyfly.errors import LazyflyError, NotFound
from lazyfly.p2p.task.pieces import piece_count


class TaskProgress:
    """The live state of task `task_id` on this peer."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.content_length: int | None = None
        self.piece_length: int | None = None
        self.landed: set[int] = set()
        self.covered: set[int] | None = set()  # pieces some download will fetch; None: all of them
        self.urgent: set[int] = set()
        self.error: LazyflyError | None = None
        self.runs = 0
        self.readers = 0
        self._changed = anyio.Event()

    @property
    def started(self) -> bool:
        """Whether the size is known."""
        return self.content_length is not None

    @property
    def piece_count(self) -> int:
        """The number of pieces (0 until started)."""
        if self.content_length is None or self.piece_length is None:
            return 0
        return piece_count(self.content_length, self.piece_length)

    @property
    def complete(self) -> bool:
        """Whether every piece is stored."""
        return self.started and len(self.landed) == self.piece_count

    @property
    def in_use(self) -> bool:
        """Whether a download or a reader holds the task (Rule 4)."""
        return self.runs > 0 or self.readers > 0

    def start(self, content_length: int, piece_length: int, stored: Iterable[int]) -> None:
        """The size is known; `stored` are the pieces already on disk."""
        self.content_length, self.piece_length = content_length, piece_length
        self.landed.update(stored)
        self.error = None
        self.notify()

    def covers(self, numbers: set[int] | None) -> bool:
        """Whether a download in flight (or done) fetches every piece of `numbers` (None: all)."""
        if self.complete or (numbers is not None and self.started and numbers <= self.landed):
            return True
        if self.runs == 0:
            return False
        if self.covered is None:
            return True
        return numbers is not None and numbers <= self.covered | self.landed

    def uncovered(self) -> set[int]:
        """The pieces neither stored nor fetched by a download in flight."""
        if self.covered is None:
            return set()
        return set(range(self.piece_count)) - self.covered - self.landed

    def begin_run(self, numbers: set[int] | None) -> None:
        """A download of `numbers` (None: whatever is missing of the whole task) starts."""
        self.runs += 1
        if numbers is None or self.covered is None:
            self.covered = None
        else:
            self.covered |= numbers

    def order(self, number: int) -> tuple[bool, int]:
        """The sort key of a piece to fetch: urgent ones first, then by number (Rule 3)."""
        return number not in self.urgent, number

    def end_run(self, error: LazyflyError | None = None) -> None:
        """A download ended (with `error` when it failed)."""
        self.runs -= 1
        if error is not None:
            self.error = error
        if self.runs == 0 and not self.complete:
            self.covered = set()
        self.notify()

    def add(self, number: int) -> None:
        """Piece `number` is stored (Rule 1)."""
        self.landed.add(number)
        self.notify()

    async def wait_change(self) -> None:
        """Return at the next change."""
        await self._changed.wait()

    async def wait_started(self) -> None:
        """Return once the size is known; raise the download's error if it failed before."""
        while not self.started:
            if self.error is not None and self.runs == 0:
                raise self.error
            await self.wait_change()

    async def wait_piece(self, number: int) -> None:
        """Return once piece `number` is stored (Rules 2, 3)."""
        if number in self.landed:
            return
        self.urgent.add(number)
        try:
            while number not in self.landed:
                if self.runs == 0:
                    if self.error is not None:
                        raise self.error
                    raise NotFound(f"task {self.task_id}: no download is fetching piece {number}")
                await self.wait_change()
        finally:
            self.urgent.discard(number)

    def notify(self) -> None:
        """Wake every waiter (something changed)."""
        changed, self._changed = self._changed, anyio.Event()
        changed.set()
