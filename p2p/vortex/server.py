"""The Vortex TCP server of a peer: answers DownloadPiece with the piece's header and its bytes.

A thin adapter (STYLE 3): bytes from the socket go to codec.FrameDecoder; frames come from the codec
encoders. Piece bytes go out with sendfile(2) from the task's content file right after the header
frame, so the server works on plain non-blocking sockets (anyio.wait_readable / wait_writable):
a buffered stream could still hold header bytes when sendfile starts writing behind it.

Rules:
- Rule 1: a connection may ask for several pieces one after the other; it ends on Close, at the
  end of the stream, on a protocol error (answered with an Error frame when possible), or when a
  request does not arrive whole within DEFAULT_REQUEST_TIMEOUT.
- Rule 2: a piece the store does not hold is answered with Error NOT_FOUND, never a guess.
- Rule 3: one connection's failure never ends the server; every connection is a task of the
  server's task group, cancelled with it.
- Rule 4: a piece goes out only after `bandwidth` (the peer's upload limit) gave its length in
  tokens; `on_sent` hears of every byte count sent.
"""

import logging
import os
import secrets
import socket
from collections.abc import Callable

import anyio
import anyio.abc

from lazyfly.errors import RemoteProtocolError
from lazyfly.p2p.rate_limiter import RateLimiter
from lazyfly.p2p.storage.piece_store import PieceStore
from lazyfly.p2p.vortex.codec import NEED_DATA, FrameDecoder, encode_error, encode_piece_content
from lazyfly.p2p.vortex.messages import (
    Close,
    DownloadPiece,
    Error,
    ErrorCode,
    PieceContent,
    PieceMetadata,
    TrafficType,
)

log = logging.getLogger(__name__)
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_SEND_TIMEOUT = 300.0
RECEIVE_SIZE = 64 << 10
LISTEN_BACKLOG = 256


async def serve_vortex(
    store: PieceStore,
    host: str,
    port: int,
    peer_id: str,
    *,
    bandwidth: RateLimiter | None = None,
    on_sent: Callable[[int], None] | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve pieces of `store` on host:port until cancelled; report the bound port when listening."""
    uploads = _Uploads(peer_id, bandwidth or RateLimiter(None), on_sent or (lambda sent: None))
    listener = socket.create_server((host, port), backlog=LISTEN_BACKLOG)
    listener.setblocking(False)
    with listener:
        bound = listener.getsockname()[1]
        log.info("vortex server on %s:%d", host, bound)
        async with anyio.create_task_group() as tg:
            task_status.started(bound)
            while True:
                await anyio.wait_readable(listener)
                try:
                    connection, _ = listener.accept()
                except BlockingIOError:
                    continue
                connection.setblocking(False)
                tg.start_soon(_serve_connection, connection, store, uploads)


class _Uploads:
    def __init__(self, peer_id: str, bandwidth: RateLimiter, on_sent: Callable[[int], None]) -> None:
        self.peer_id, self.bandwidth, self.on_sent = peer_id, bandwidth, on_sent


async def _serve_connection(connection: socket.socket, store: PieceStore, uploads: _Uploads) -> None:
    decoder = FrameDecoder()
    with connection:
        try:
            while True:
                frame = await _next_frame(connection, decoder)
                if frame is None or isinstance(frame, Close):
                    return
                if not isinstance(frame, DownloadPiece):
                    raise RemoteProtocolError(f"vortex: a peer sent {type(frame).__name__} to the server")
                await _send_piece(connection, store, uploads, frame)
        except RemoteProtocolError as exc:
            log.info("vortex: closing a connection: %s", exc)
            with anyio.move_on_after(1):
                await _send_all(connection, encode_error(0, Error(ErrorCode.INVALID_ARGUMENT, str(exc))))
        except (TimeoutError, OSError) as exc:
            log.info("vortex: connection lost: %r", exc)


async def _next_frame(connection: socket.socket, decoder: FrameDecoder) -> object | None:
    with anyio.fail_after(DEFAULT_REQUEST_TIMEOUT):
        while (event := decoder.next_event()) is NEED_DATA:
            await anyio.wait_readable(connection)
            try:
                data = connection.recv(RECEIVE_SIZE)
            except BlockingIOError:
                continue
            decoder.feed(data)
            if not data and decoder.at_frame_boundary:
                return None
        return event


async def _send_piece(
    connection: socket.socket, store: PieceStore, uploads: _Uploads, ask: DownloadPiece
) -> None:
    record = await anyio.to_thread.run_sync(store.meta.piece, ask.task_id, ask.number)
    if record is None:
        message = f"task {ask.task_id} has no piece {ask.number} here"
        await _send_all(connection, encode_error(0, Error(ErrorCode.NOT_FOUND, message)))
        return
    metadata = PieceMetadata(
        record.number,
        record.offset,
        record.length,
        record.digest,
        uploads.peer_id,
        TrafficType.REMOTE_PEER,
        0,
        0,
    )
    await uploads.bandwidth.acquire(record.length)
    with anyio.fail_after(DEFAULT_SEND_TIMEOUT):
        await _send_all(connection, encode_piece_content(secrets.randbelow(256), PieceContent(metadata)))
        content = os.open(store.content.path(ask.task_id), os.O_RDONLY)
        try:
            offset, left = record.offset, record.length
            while left:
                await anyio.wait_writable(connection)
                try:
                    sent = os.sendfile(connection.fileno(), content, offset, left)
                except BlockingIOError:
                    continue
                if sent == 0:
                    raise OSError(f"task {ask.task_id}: content file ends inside piece {ask.number}")
                offset, left = offset + sent, left - sent
                uploads.on_sent(sent)
        finally:
            os.close(content)


async def _send_all(connection: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        await anyio.wait_writable(connection)
        try:
            view = view[connection.send(view) :]
        except BlockingIOError:
            continue
