"""One AnnouncePeer conversation with the scheduler (scheduler.v2), as the peer speaks it.

A thin adapter over the grpc.aio bidirectional call: each method sends one request of
REFERENCE.md §2 (the oneof field it fills is its name), `answer` reads the scheduler's next reply.

Rules:
- Rule 1 (STYLE 7): writes go one at a time (a second write while one is pending breaks the call
  with "Internal error from Core"); every write waits at most DEFAULT_SEND_TIMEOUT and every
  answer at most DEFAULT_ANSWER_TIMEOUT (the scheduler may wait seconds for a seed peer).
- Rule 2: any gRPC failure, a closed stream or a timeout is Unavailable naming the scheduler and
  the peer: the conductor then goes on without it (back to the origin).
- Rule 3: piece reports are best effort: the first that fails marks the session lost (logged once)
  and the download goes on; the next answer or peer-level message then raises Unavailable.
- Rule 4: closing half-closes the stream and waits (bounded) for the scheduler to end it, so the
  last messages (finished, failed) are read before the call is cancelled.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator

import anyio
import grpc
from dragonfly_api import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from google.protobuf import duration_pb2, timestamp_pb2

from lazyfly.errors import Unavailable
from lazyfly.p2p.storage.piece_meta import PieceRecord

log = logging.getLogger(__name__)
DEFAULT_SEND_TIMEOUT = 10.0
DEFAULT_ANSWER_TIMEOUT = 60.0
BACK_TO_SOURCE, REMOTE_PEER = common_pb2.TrafficType.BACK_TO_SOURCE, common_pb2.TrafficType.REMOTE_PEER


def piece_message(
    record: PieceRecord, parent_id: str, traffic_type: int, cost_seconds: float
) -> common_pb2.Piece:
    """The common.v2.Piece of a stored piece."""
    created = timestamp_pb2.Timestamp()
    created.GetCurrentTime()
    return common_pb2.Piece(
        number=record.number,
        parent_id=parent_id,
        offset=record.offset,
        length=record.length,
        digest=record.digest,
        traffic_type=traffic_type,
        cost=duration_pb2.Duration(seconds=int(cost_seconds), nanos=int(cost_seconds % 1 * 1e9)),
        created_at=created,
    )


class SchedulerSession:
    """The AnnouncePeer stream of peer `peer_id` of `task_id` on host `host_id`."""

    def __init__(
        self, stub: scheduler_pb2_grpc.SchedulerStub, where: str, host_id: str, task_id: str, peer_id: str
    ) -> None:
        self.where = f"scheduler {where}"
        self.ids = {"host_id": host_id, "task_id": task_id, "peer_id": peer_id}
        self.call = stub.AnnouncePeer()
        self.lost: Unavailable | None = None
        self._writing = anyio.Lock()  # gRPC takes one write at a time; piece workers report at once

    async def close(self) -> None:
        """End the conversation once the scheduler took every message (Rule 4)."""
        with contextlib.suppress(Unavailable), _as_unavailable(self, "closing"):
            with anyio.move_on_after(DEFAULT_SEND_TIMEOUT):
                await self.call.done_writing()
                await self.call.code()  # the scheduler has read everything; cancelling earlier loses it
        self.call.cancel()

    async def answer(self) -> scheduler_pb2.AnnouncePeerResponse:
        """The scheduler's next answer (Rules 1, 2)."""
        if self.lost is not None:
            raise self.lost
        with _as_unavailable(self, "waiting for an answer"):
            with anyio.fail_after(DEFAULT_ANSWER_TIMEOUT):
                message = await self.call.read()
        if message is grpc.aio.EOF:
            raise Unavailable(f"{self.where}: closed the stream of peer {self.ids['peer_id']}")
        return message

    async def register(self, download: common_pb2.Download) -> None:
        await self._send(register_peer_request=scheduler_pb2.RegisterPeerRequest(download=download))

    async def started(self) -> None:
        await self._send(download_peer_started_request=scheduler_pb2.DownloadPeerStartedRequest())

    async def back_to_source_started(self, why: str) -> None:
        await self._send(
            download_peer_back_to_source_started_request=scheduler_pb2.DownloadPeerBackToSourceStartedRequest(
                description=why
            )
        )

    async def piece_finished(self, record: PieceRecord, parent_id: str, cost_seconds: float) -> None:
        piece = piece_message(record, parent_id, REMOTE_PEER, cost_seconds)
        await self._report(
            download_piece_finished_request=scheduler_pb2.DownloadPieceFinishedRequest(piece=piece)
        )

    async def piece_back_to_source_finished(self, record: PieceRecord, cost_seconds: float) -> None:
        piece = piece_message(record, "", BACK_TO_SOURCE, cost_seconds)
        await self._report(
            download_piece_back_to_source_finished_request=scheduler_pb2.DownloadPieceBackToSourceFinishedRequest(
                piece=piece
            )
        )

    async def piece_failed(self, number: int, parent_id: str) -> None:
        failed = scheduler_pb2.DownloadPieceFailedRequest(
            piece_number=number, parent_id=parent_id, temporary=True
        )
        await self._report(download_piece_failed_request=failed)

    async def reschedule(self, failed_parents: Iterable[common_pb2.Peer], why: str) -> None:
        request = scheduler_pb2.ReschedulePeerRequest(candidate_parents=list(failed_parents), description=why)
        await self._send(reschedule_peer_request=request)

    async def finished(self, back_to_source: bool) -> None:
        if back_to_source:
            done = scheduler_pb2.DownloadPeerBackToSourceFinishedRequest()
            await self._send(download_peer_back_to_source_finished_request=done)
        else:
            await self._send(download_peer_finished_request=scheduler_pb2.DownloadPeerFinishedRequest())

    async def failed(self, back_to_source: bool, why: str) -> None:
        if back_to_source:
            failed = scheduler_pb2.DownloadPeerBackToSourceFailedRequest(description=why)
            await self._send(download_peer_back_to_source_failed_request=failed)
        else:
            await self._send(
                download_peer_failed_request=scheduler_pb2.DownloadPeerFailedRequest(description=why)
            )

    async def _report(self, **request: object) -> None:
        if self.lost is not None:
            return
        try:
            await self._send(**request)
        except Unavailable as exc:
            self.lost = exc
            log.warning("%s; the download goes on without reporting", exc)

    async def _send(self, **request: object) -> None:
        if self.lost is not None:
            raise self.lost
        message = scheduler_pb2.AnnouncePeerRequest(**self.ids, **request)
        with _as_unavailable(self, f"sending {next(iter(request))}"):
            with anyio.fail_after(DEFAULT_SEND_TIMEOUT):
                async with self._writing:
                    await self.call.write(message)


@contextlib.contextmanager
def _as_unavailable(session: SchedulerSession, doing: str) -> Iterator[None]:
    """Turn gRPC failures and timeouts inside the block into Unavailable (Rule 2)."""
    try:
        yield
    except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, TimeoutError) as exc:
        detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
        raise Unavailable(f"{session.where}: {doing} for peer {session.ids['peer_id']}: {detail}") from exc
