"""The peer's downloads, one TaskProgress per task: started once, shared by every reader.

Rules:
- Rule 1: a request for pieces a download in flight already fetches waits for that download; only
  pieces nobody fetches start a new one (a range); a whole-task request fetches what no other
  download covers, so a prefetch never fetches a range a reader's download is getting.
- Rule 2: downloads run in the daemon's task group (STYLE 6), never in the caller's: a proxy client
  that goes away does not cancel a prefetch, and `download` returns once the task's size is known.
- Rule 3: a download's failure is kept in its TaskProgress for the readers; it never ends the
  daemon. A bug (an exception outside the error categories) is logged with its traceback too.
"""

import logging

import anyio
import anyio.abc

from lazyfly.errors import LazyflyError, Unavailable
from lazyfly.p2p.download.conductor import Conductor
from lazyfly.p2p.download.progress import TaskProgress
from lazyfly.p2p.download.request import DownloadRequest
from lazyfly.p2p.storage.piece_store import PieceStore

log = logging.getLogger(__name__)


class TaskManager:
    """Downloads of this peer, run in `task_group`."""

    def __init__(self, store: PieceStore, conductor: Conductor, task_group: anyio.abc.TaskGroup) -> None:
        self.store = store
        self.conductor = conductor
        self.task_group = task_group
        self.tasks: dict[str, TaskProgress] = {}

    def progress(self, task_id: str) -> TaskProgress | None:
        """The progress of a task being downloaded or stored here; None if the peer has none of it."""
        progress = self.tasks.get(task_id)
        if progress is not None:
            return progress
        record = self.store.meta.task(task_id)
        if record is None:
            return None
        progress = self.tasks[task_id] = TaskProgress(task_id)
        progress.start(
            record.content_length, record.piece_length, (r.number for r in self.store.meta.pieces_of(task_id))
        )
        return progress

    async def download(self, request: DownloadRequest, numbers: set[int] | None = None) -> TaskProgress:
        """Make sure pieces `numbers` (None: all) of the request's task are coming (Rules 1, 2)."""
        progress = self.progress(request.task_id) or self.tasks.setdefault(
            request.task_id, TaskProgress(request.task_id)
        )
        if numbers is None and progress.started and progress.covered is not None:
            extra = progress.uncovered()
            if extra:
                self._start(request, progress, extra, whole=True)
        elif not progress.covers(numbers):
            self._start(request, progress, numbers, whole=numbers is None)
        await progress.wait_started()
        return progress

    def forget(self, task_id: str) -> None:
        """Drop the in-memory state of a task nobody uses (deleted or evicted)."""
        progress = self.tasks.get(task_id)
        if progress is not None and not progress.in_use:
            del self.tasks[task_id]

    def _start(
        self, request: DownloadRequest, progress: TaskProgress, numbers: set[int] | None, whole: bool
    ) -> None:
        progress.begin_run(None if whole else numbers)
        self.task_group.start_soon(self._run, request, progress, numbers, name=f"download {progress.task_id}")

    async def _run(self, request: DownloadRequest, progress: TaskProgress, numbers: set[int] | None) -> None:
        failure: LazyflyError | None = None
        self.conductor.metrics.downloads_in_flight.inc()
        try:
            await self.conductor.run(request, progress, numbers)
        except LazyflyError as exc:
            failure = exc
            log.warning("task %s (%s): download failed: %s", progress.task_id, request.url, exc)
        except Exception as exc:
            failure = Unavailable(f"task {progress.task_id}: download broke: {type(exc).__name__}: {exc}")
            log.exception("task %s: download broke", progress.task_id)
        finally:
            self.conductor.metrics.downloads_in_flight.dec()
            if failure is not None:
                self.conductor.metrics.tasks.labels("failed").inc()
            progress.end_run(failure)
