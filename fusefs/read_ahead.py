"""Read-ahead for files read sequentially: a per-file window (pure) and a capped background fetcher.

A cold sequential read reaches fusefs as a stream of FUSE read requests of at most 1 MiB; a miss
waits for one backend round trip (a few milliseconds at a registry, whatever the size asked for),
so serving them one miss at a time leaves the network idle most of the time. Like the kernel's
page-cache read-ahead, a file seen to be read sequentially gets its next chunks fetched in the
background, in a window that grows as the sequential run goes on, as several large concurrent
backend reads. The reads that follow find their chunks cached, or wait on the read-ahead's flights.

Rules:
- Rule 1 (only sequential, only within the file): a window opens only after `sequential_reads`
  reads of one file in a row, the first at offset 0 or each starting where the reads before it
  ended (or overlapping their last `size` bytes: a re-read of the tail). Any other read, a jump
  forward included, resets the file's window. (The kernel queues its read-ahead requests in
  order and fusefs sees them in that order, so the rule can be this strict; random reads of a
  small file are not mistaken for a sequential run.) Read-ahead never passes the file's end and
  never touches other files, so opening and reading many small files (a container starting)
  fetches nothing more than before: a miss already brings the file's next `read_amplify` bytes.
  Only chunks neither cached nor in flight are queued, so a warm file costs no I/O.
- Rule 2 (window): the first window is `initial` bytes from the end of the reads seen; each later
  one starts where the previous one ended and is twice as long, up to `maximum`. A new window is
  asked for once the reader has come within half a window of the end of what was asked, so
  reading ahead stays between half a window and a window ahead of the reader.
- Rule 3 (ownership): `ReadAhead.serve` owns a nursery of `workers` tasks (STYLE 6); the image's
  owner runs it beside the image's prefetch and cancels it before closing the image (daemon.py,
  served_images.py). Jobs wait
  in a bounded queue; when it is full, new jobs are dropped: read-ahead is a hint, and an
  on-demand read fetches whatever read-ahead did not.
- Rule 4 (one fetch per chunk): a fetch job is one run of missing chunks of one blob, fetched with
  `BlobReader.prefetch` (which claims the chunks in the reader's InFlight table when the job
  starts and skips ready or claimed ones), so an on-demand read of a chunk being read ahead waits
  for that flight instead of fetching it again, and a failed job leaves its chunks to on-demand
  reads (blob_reader.py, Rule 7). Failures are logged at debug level and never stop the workers.
- Rule 5 (into the cache only): a job's chunks land in the cache file, and the reads that follow
  are answered from there as views of its mapping (chunk_cache.py), so no chunk is held in the
  daemon's memory after its job. (Keeping them in memory for the reader measured no faster once
  the cache file was read through views, and kept every page read mapped in the daemon.)
- Rule 6 (bounded memory): at most `max_files` files keep a window (least recently read dropped).
- Rule 7 (setting): an image's `read_ahead` setting caps the window; the first window and each
  backend request are no larger than the cap, and 0 turns read-ahead off (`ReadAhead.up_to`), for
  images read at random where fetched-ahead bytes would be wasted.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from lazyfly.api.fusefs import DEFAULT_READ_AHEAD
from lazyfly.errors import LazyflyError
from lazyfly.format.layout import ChunkRef
from lazyfly.fusefs.blob_reader import BlobReader
from lazyfly.fusefs.lru import Lru

log = logging.getLogger(__name__)

# Reads in a row that make a file sequential; 2 added 15 % registry bytes to a container start
# (bench/coldstart.py: the loader's reads of big shared libraries looked sequential).
SEQUENTIAL_READS = 8
DEFAULT_INITIAL_WINDOW = 8 << 20
DEFAULT_MAXIMUM_WINDOW = DEFAULT_READ_AHEAD
# Compressed bytes per read-ahead backend request: a whole default window. Large, because
# docker-registry reads at least 4 MiB from its file into a fresh buffer for every range request
# (its CPU per GiB fell from 1.5-1.9 s at 16 MiB to 1.3-1.45 s at 30 MiB, and by a further 20 % at
# 64 MiB, in three alternating pairs). An answer is received a chunk at a time into one reused
# buffer and each chunk is served as soon as it arrives (blob_reader.py, Rule 5), so its size
# costs neither memory nor the reader's wait; 128 MiB measured no better.
DEFAULT_RUN_LIMIT = 64 << 20
DEFAULT_WORKERS = 3
DEFAULT_MAX_FILES = 1024
QUEUE_LIMIT = 64  # jobs waiting for a worker


@dataclass(frozen=True)
class ReadAheadPolicy:
    """How far ahead to read: window sizes (Rule 2) and the size of each backend request."""

    sequential_reads: int = SEQUENTIAL_READS
    initial: int = DEFAULT_INITIAL_WINDOW
    maximum: int = DEFAULT_MAXIMUM_WINDOW
    run_limit: int = DEFAULT_RUN_LIMIT
    workers: int = DEFAULT_WORKERS

    def __post_init__(self) -> None:
        if (
            self.sequential_reads < 1
            or not 0 < self.initial <= self.maximum
            or self.run_limit <= 0
            or self.workers < 1
        ):
            raise ValueError(f"bad read-ahead policy {self}")


class SequentialWindow:
    """The access pattern of one file and how far ahead of it reading was asked (Rules 1, 2).

    Pure state: `on_read` is told of each read and answers the byte range to read ahead, if any.
    """

    def __init__(self, policy: ReadAheadPolicy) -> None:
        self.policy = policy
        self.next_offset = -1  # where a sequential reader reads next (the furthest end seen)
        self.streak = 0  # reads in a row that were sequential
        self.window = 0  # size of the last window asked for; 0: none yet
        self.ahead_end = 0  # end of what read-ahead was asked for

    def on_read(self, offset: int, size: int, file_size: int) -> tuple[int, int] | None:
        """Record a read of `size` bytes at `offset`; return the range [start, end) to read ahead."""
        end = min(offset + size, file_size)
        if self.next_offset >= 0 and self.next_offset - size <= offset <= self.next_offset:
            self.streak += 1
            self.next_offset = max(self.next_offset, end)
        else:
            self.streak = 1 if offset == 0 else 0
            self.next_offset = end
            self.window = 0
            self.ahead_end = 0
        if self.streak < self.policy.sequential_reads:
            return None
        if self.window == 0:
            self.window = self.policy.initial
            start = self.next_offset
        elif self.ahead_end - self.next_offset > self.window // 2:
            return None  # still more than half a window ahead of the reader
        else:
            self.window = min(self.window * 2, self.policy.maximum)
            start = max(self.ahead_end, self.next_offset)
        stop = min(start + self.window, file_size)
        self.ahead_end = max(self.ahead_end, stop)
        return (start, stop) if start < stop else None


@dataclass(frozen=True)
class _Job:
    reader: BlobReader
    blob_index: int
    refs: Sequence[ChunkRef]


class ReadAhead:
    """The read-ahead of one image: a window per file, and the workers that fetch (Rules 3–5).

    `enabled=False` keeps the workers but never opens a window.
    """

    def __init__(
        self,
        policy: ReadAheadPolicy | None = None,
        *,
        enabled: bool = True,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> None:
        self.policy = policy or ReadAheadPolicy()
        self.enabled = enabled
        self.jobs_done = 0  # jobs fetched (or found with nothing left to fetch)
        self.jobs_dropped = 0  # jobs not queued because the queue was full
        self.jobs_failed = 0  # jobs whose fetch failed
        self._pending = 0
        self._windows: Lru[int, SequentialWindow] = Lru(max_files)
        self._send, self._receive = trio.open_memory_channel[_Job](QUEUE_LIMIT)

    @classmethod
    def up_to(cls, window: int) -> "ReadAhead":
        """Read-ahead whose windows (and backend requests) are at most `window` bytes; 0: none."""
        if window < 0:
            raise ValueError(f"read-ahead window {window} is negative")
        if window == 0:
            return cls(enabled=False)
        limited = ReadAheadPolicy(
            initial=min(DEFAULT_INITIAL_WINDOW, window),
            maximum=window,
            run_limit=min(DEFAULT_RUN_LIMIT, window),
        )
        return cls(limited)

    def on_read(self, file_key: int, offset: int, size: int, file_size: int) -> tuple[int, int] | None:
        """Tell the window of file `file_key` about a read; return the range to read ahead, if any."""
        if not self.enabled:
            return None
        window = self._windows.get(file_key) or self._windows.put(file_key, SequentialWindow(self.policy))
        return window.on_read(offset, size, file_size)

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def submit(self, reader: BlobReader, blob_index: int, refs: Sequence[ChunkRef]) -> bool:
        """Queue one run of chunks of blob `blob_index` (read by `reader`) to fetch; False if the
        queue is full (dropped)."""
        try:
            self._send.send_nowait(_Job(reader, blob_index, refs))
        except trio.WouldBlock:
            self.jobs_dropped += 1
            return False
        self._pending += 1
        return True

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until cancelled."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.policy.workers):
                nursery.start_soon(self._work)
            task_status.started()

    async def _work(self) -> None:
        async for job in self._receive:
            try:
                await job.reader.prefetch(job.refs, merge_limit=self.policy.run_limit)
            except (LazyflyError, OSError) as exc:
                self.jobs_failed += 1
                digest = job.reader.blob.digest
                log.debug("read-ahead of %d chunks of %s failed: %s", len(job.refs), digest, exc)
                continue
            finally:
                self._pending -= 1
            self.jobs_done += 1
