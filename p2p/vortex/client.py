"""The Vortex TCP client: download one piece from a parent and check it.

A thin adapter (STYLE 3) over codec.FrameDecoder. Like the reference client, one connection per
piece, connected within DEFAULT_CONNECT_TIMEOUT.

Rules:
- Rule 1: the piece's bytes are checked against the digest the parent sent (crc32c or crc32)
  before they are returned; a mismatch is Corrupt (the caller blocklists that parent).
- Rule 2: an Error frame becomes the matching category (NotFound, InvalidArgument, Unavailable);
  a stream that ends early or breaks the protocol is RemoteProtocolError; no answer within the
  timeouts is Unavailable.
"""

import anyio

from lazyfly.checksum import verify
from lazyfly.errors import InvalidArgument, LazyflyError, NotFound, RemoteProtocolError, Unavailable
from lazyfly.p2p.vortex.codec import NEED_DATA, FrameDecoder, encode_close, encode_download_piece
from lazyfly.p2p.vortex.messages import (
    DownloadPiece,
    Error,
    ErrorCode,
    PieceContent,
    PieceData,
    PieceEnd,
    PieceMetadata,
)

DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_PIECE_TIMEOUT = 120.0
RECEIVE_SIZE = 1 << 20

_ERROR_OF_CODE: dict[int, type[LazyflyError]] = {
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.INVALID_ARGUMENT: InvalidArgument,
}


async def download_piece(host: str, port: int, task_id: str, number: int) -> tuple[PieceMetadata, bytes]:
    """Piece `number` of `task_id` from the parent at host:port, checked (Rule 1)."""
    where = f"parent {host}:{port}"
    try:
        with anyio.fail_after(DEFAULT_CONNECT_TIMEOUT):
            stream = await anyio.connect_tcp(host, port)
    except (OSError, TimeoutError) as exc:
        raise Unavailable(f"{where}: cannot connect: {exc!r}") from exc
    async with stream:
        try:
            with anyio.fail_after(DEFAULT_PIECE_TIMEOUT):
                await stream.send(encode_download_piece(1, DownloadPiece(task_id, number)))
                metadata, data = await _receive_piece(stream, where)
                await stream.send(encode_close(1))
        except TimeoutError as exc:
            raise Unavailable(f"{where}: piece {number} of task {task_id} not received in time") from exc
        except (anyio.BrokenResourceError, OSError) as exc:
            raise Unavailable(f"{where}: connection broke: {exc!r}") from exc
    if metadata.number != number:
        raise RemoteProtocolError(f"{where}: asked for piece {number}, got piece {metadata.number}")
    verify(metadata.digest, data, f"{where}: task {task_id} piece {number}")
    return metadata, data


async def _receive_piece(stream: anyio.abc.SocketStream, where: str) -> tuple[PieceMetadata, bytes]:
    decoder = FrameDecoder()
    metadata: PieceMetadata | None = None
    parts: list[bytes] = []
    while True:
        event = decoder.next_event()
        if event is NEED_DATA:
            try:
                decoder.feed(await stream.receive(RECEIVE_SIZE))
            except anyio.EndOfStream:
                if decoder.at_frame_boundary:
                    raise Unavailable(f"{where}: closed the connection without answering") from None
                decoder.feed(b"")
            continue
        if isinstance(event, Error):
            category = _ERROR_OF_CODE.get(event.code, Unavailable)
            raise category(f"{where}: {event.message}")
        if isinstance(event, PieceContent):
            metadata = event.metadata
        elif isinstance(event, PieceData):
            parts.append(event.data)
        elif isinstance(event, PieceEnd) and metadata is not None:
            return metadata, b"".join(parts)
        else:
            raise RemoteProtocolError(f"{where}: unexpected {type(event).__name__} while waiting for a piece")
