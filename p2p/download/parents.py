"""Pieces from parent peers: who has what through SyncPieces, the bytes over Vortex TCP.

Rules:
- Rule 1: each parent's DfdaemonUpload.SyncPieces stream says which wanted pieces it holds, now and
  as they land on it; a stream that breaks or stays silent for DEFAULT_SYNC_IDLE_TIMEOUT drops the
  parent's offers.
- Rule 2: at most `concurrency` pieces are in flight: the ones readers wait for first, then the
  lowest number first (readers stream in order), each from the holder with the fewest pieces in
  flight (spreading the load over parents).
- Rule 3: a parent whose piece fails (refused, cut off, wrong CRC, protocol broken) is blocklisted
  for the rest of this round, reported to `on_failed`, and the piece is fetched from another holder.
- Rule 4: the round ends when every wanted piece is stored, or when no stream is open and no
  holder is left for the missing ones; `fetch_from_parents` returns what is still missing, and the
  conductor asks the scheduler for other parents.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import grpc
from dragonfly_api import dfdaemon_pb2, dfdaemon_pb2_grpc

from lazyfly.errors import LazyflyError
from lazyfly.p2p.download.progress import TaskProgress
from lazyfly.p2p.rate_limiter import RateLimiter
from lazyfly.p2p.storage.piece_meta import PieceRecord
from lazyfly.p2p.storage.piece_store import PieceStore
from lazyfly.p2p.task.pieces import piece
from lazyfly.p2p.vortex.client import download_piece

log = logging.getLogger(__name__)
DEFAULT_SYNC_IDLE_TIMEOUT = 60.0
DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class Parent:
    """A candidate parent as the scheduler named it."""

    id: str
    ip: str
    upload_port: int
    vortex_port: int


PieceFinished = Callable[[PieceRecord, Parent, float], Awaitable[None]]
PieceFailed = Callable[[int, Parent], Awaitable[None]]


@dataclass
class _Round:
    progress: TaskProgress
    wanted: set[int]
    holders: dict[int, set[str]] = field(default_factory=dict)
    vortex_ports: dict[str, int] = field(default_factory=dict)
    in_flight: set[int] = field(default_factory=set)
    load: dict[str, int] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)
    open_streams: int = 0

    def notify(self) -> None:
        self.progress.notify()

    async def wait_change(self) -> None:
        await self.progress.wait_change()

    def next_job(self, parents: dict[str, Parent]) -> tuple[int, Parent] | None:
        self.wanted -= self.progress.landed  # pieces another download stored meanwhile
        for number in sorted(self.wanted - self.in_flight, key=self.progress.order):
            usable = [p for p in self.holders.get(number, ()) if p not in self.blocked]
            if usable:
                best = min(usable, key=lambda p: self.load.get(p, 0))
                return number, parents[best]
        return None

    @property
    def done(self) -> bool:
        self.wanted -= self.progress.landed
        return not self.wanted


async def fetch_from_parents(
    parents: list[Parent],
    store: PieceStore,
    progress: TaskProgress,
    wanted: set[int],
    host_id: str,
    *,
    on_finished: PieceFinished,
    on_failed: PieceFailed,
    bandwidth: RateLimiter,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> tuple[set[int], set[str]]:
    """Fetch `wanted` pieces from `parents`; return (still missing, blocklisted parent ids) (Rule 4)."""
    state = _Round(progress, set(wanted) - progress.landed)
    by_id = {parent.id: parent for parent in parents}
    if not state.wanted:
        return set(), set()
    async with anyio.create_task_group() as tg:
        state.open_streams = len(parents)
        for parent in parents:
            tg.start_soon(_sync_pieces, parent, progress.task_id, host_id, state)
        for _ in range(concurrency):
            tg.start_soon(_worker, by_id, store, progress, state, on_finished, on_failed, bandwidth)
        while not (state.done or _stuck(state)):
            await state.wait_change()
        tg.cancel_scope.cancel()
    return state.wanted, state.blocked


def _stuck(state: _Round) -> bool:
    """No stream can offer more and nothing in flight: the missing pieces have no holder left."""
    if state.in_flight or state.open_streams:
        return False
    return all(not (state.holders.get(n, set()) - state.blocked) for n in state.wanted)


async def _sync_pieces(parent: Parent, task_id: str, host_id: str, state: _Round) -> None:
    request = dfdaemon_pb2.SyncPiecesRequest(
        host_id=host_id, task_id=task_id, interested_piece_numbers=sorted(state.wanted)
    )
    try:
        async with grpc.aio.insecure_channel(f"{parent.ip}:{parent.upload_port}") as channel:
            call = dfdaemon_pb2_grpc.DfdaemonUploadStub(channel).SyncPieces(request)
            while True:
                with anyio.fail_after(DEFAULT_SYNC_IDLE_TIMEOUT):
                    message = await call.read()
                if message is grpc.aio.EOF:
                    break
                state.holders.setdefault(message.number, set()).add(parent.id)
                state.vortex_ports[parent.id] = message.tcp_port or parent.vortex_port
                state.notify()
    except (grpc.aio.AioRpcError, TimeoutError) as exc:
        detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else "silent too long"
        log.info("task %s: SyncPieces of parent %s ended: %s", task_id, parent.id, detail)
    finally:
        state.open_streams -= 1
        state.notify()


async def _worker(
    parents: dict[str, Parent],
    store: PieceStore,
    progress: TaskProgress,
    state: _Round,
    on_finished: PieceFinished,
    on_failed: PieceFailed,
    bandwidth: RateLimiter,
) -> None:
    while True:
        job = state.next_job(parents)
        if job is None:
            await state.wait_change()
            continue
        number, parent = job
        state.in_flight.add(number)
        state.load[parent.id] = state.load.get(parent.id, 0) + 1
        try:
            record, cost = await _fetch_one(parent, state, store, progress, number, bandwidth)
        except LazyflyError as exc:
            log.warning(
                "task %s piece %d from parent %s failed: %s", progress.task_id, number, parent.id, exc
            )
            state.blocked.add(parent.id)
            await on_failed(number, parent)
        else:
            state.wanted.discard(number)
            progress.add(number)
            await on_finished(record, parent, cost)
        finally:
            state.in_flight.discard(number)
            state.load[parent.id] -= 1
            state.notify()


async def _fetch_one(
    parent: Parent,
    state: _Round,
    store: PieceStore,
    progress: TaskProgress,
    number: int,
    bandwidth: RateLimiter,
) -> tuple[PieceRecord, float]:
    assert progress.content_length is not None and progress.piece_length is not None
    await bandwidth.acquire(piece(number, progress.content_length, progress.piece_length).length)
    began = time.monotonic()
    port = state.vortex_ports.get(parent.id, parent.vortex_port)
    metadata, data = await download_piece(parent.ip, port, progress.task_id, number)
    cost = time.monotonic() - began
    record = await anyio.to_thread.run_sync(
        store.write_piece, progress.task_id, number, data, metadata.digest, parent.id
    )
    return record, cost
