"""Vortex over real TCP on loopback: the server streams stored pieces, the client checks them.

Lying and broken parents are small servers written here that speak the codec's frames.
"""

import os

import anyio
import pytest

from lazyfly.checksum import crc32c_digest
from lazyfly.errors import Corrupt, NotFound, RemoteProtocolError, Unavailable
from lazyfly.local_registry import free_port
from lazyfly.p2p.storage.piece_store import PieceStore
from lazyfly.p2p.vortex.client import download_piece
from lazyfly.p2p.vortex.codec import NEED_DATA, FrameDecoder, encode_piece_content
from lazyfly.p2p.vortex.messages import Error, ErrorCode, PieceContent, PieceMetadata
from lazyfly.p2p.vortex.server import serve_vortex

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
TASK = "c" * 64
PIECE = 4 << 20


@pytest.fixture
def anyio_backend():
    return "asyncio"  # the peer's services run on asyncio (grpc.aio)


@pytest.fixture
def store(tmp_path):
    opened = PieceStore(tmp_path / "peer")
    opened.register(TASK, "http://origin/blob", PIECE + 1000, PIECE)
    yield opened
    opened.close()


async def test_stored_pieces_are_streamed_and_checked(store):
    pieces = [os.urandom(PIECE), os.urandom(1000)]
    for number, data in enumerate(pieces):
        store.write_piece(TASK, number, data)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_vortex, store, "127.0.0.1", 0, "peer-a")
        for number, data in enumerate(pieces):
            metadata, got = await download_piece("127.0.0.1", port, TASK, number)
            assert got == data
            assert (metadata.number, metadata.parent_id, metadata.digest) == (
                number,
                "peer-a",
                crc32c_digest(data),
            )
        with pytest.raises(NotFound, match="no piece 5"):
            await download_piece("127.0.0.1", port, TASK, 5)
        tg.cancel_scope.cancel()


async def fake_parent(answer: bytes, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    """A parent that reads one request and sends `answer`, then hangs up."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)

    async def handle(stream) -> None:
        async with stream:
            await stream.receive(1024)
            await stream.send(answer)

    async with listener:
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(handle)


def header_for(data: bytes, digest: str | None = None, length: int | None = None) -> bytes:
    metadata = PieceMetadata(
        0, 0, len(data) if length is None else length, digest or crc32c_digest(data), "liar"
    )
    return encode_piece_content(1, PieceContent(metadata))


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (header_for(b"good bytes", crc32c_digest(b"other bytes")) + b"good bytes", Corrupt, "crc32c is"),
        (header_for(b"x" * 100, length=100) + b"x" * 40, RemoteProtocolError, "ended inside"),
        (bytes([1, 9, 0, 0, 0, 0]), RemoteProtocolError, "unknown tag"),
        (b"", Unavailable, "without answering"),
    ],
    ids=["lying", "hangs-up-mid-piece", "speaks-nonsense", "hangs-up-before-answering"],
)
async def test_a_broken_or_lying_parent_is_an_error_never_data(answer, error, match):
    async with anyio.create_task_group() as tg:
        port = await tg.start(fake_parent, answer)
        with pytest.raises(error, match=match):
            await download_piece("127.0.0.1", port, TASK, 0)
        tg.cancel_scope.cancel()


async def test_a_dead_parent_is_unavailable():
    with pytest.raises(Unavailable, match="cannot connect"):
        await download_piece("127.0.0.1", free_port(), TASK, 0)


async def test_a_malformed_request_is_answered_with_an_error_frame(store):
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_vortex, store, "127.0.0.1", 0, "peer-a")
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(bytes([1, 0, 0, 0, 0, 3]) + b"abc")  # a DownloadPiece of 3 bytes
            decoder = FrameDecoder()
            while (event := decoder.next_event()) is NEED_DATA:
                decoder.feed(await stream.receive())
        assert isinstance(event, Error) and event.code == ErrorCode.INVALID_ARGUMENT
        tg.cancel_scope.cancel()
