"""A peer's back-to-source download: HEAD for the length, pieces by Range, stored with their crc."""

import os

import anyio
import httpx
import pytest
from fixtures.origin import Origin

from lazyfly.errors import RemoteProtocolError, Unavailable
from lazyfly.p2p.storage.piece_store import PieceStore
from lazyfly.p2p.task.pieces import piece_length_for
from lazyfly.p2p.task.source import content_length, download_from_source
from lazyfly.p2p.task.task_id import task_id

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
SIZE = 3 * (4 << 20) + 12345


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def store(tmp_path):
    opened = PieceStore(tmp_path / "peer")
    yield opened
    opened.close()


async def test_a_task_is_fetched_piece_by_piece_once_and_finished(store):
    data = os.urandom(SIZE)
    with Origin(data) as origin:
        async with httpx.AsyncClient() as client:
            length = await content_length(client, origin.url)
            assert length == SIZE
            task = task_id(origin.url)
            store.register(task, origin.url, length, piece_length_for(length))
            await download_from_source(store, client, origin.url, task, concurrency=2)
        assert origin.sent == SIZE  # every byte once
    assert store.meta.task(task).finished
    assert b"".join(store.read_piece(task, n)[1] for n in range(4)) == data


@pytest.mark.parametrize("lie", ["short", "length"])
async def test_an_origin_that_returns_the_wrong_length_is_an_error(store, lie):
    data = os.urandom(SIZE)
    with Origin(data) as origin:
        origin.lie = lie
        async with httpx.AsyncClient() as client:
            length = await content_length(client, origin.url)
            task = task_id(origin.url)
            store.register(task, origin.url, length, piece_length_for(length))
            with pytest.raises((RemoteProtocolError, Unavailable), match="origin"):
                await download_from_source(store, client, origin.url, task)
    assert not store.meta.task(task).finished


async def test_a_dead_origin_is_unavailable():
    async with httpx.AsyncClient() as client:
        with pytest.raises(Unavailable):
            with anyio.fail_after(30):
                await content_length(client, "http://127.0.0.1:9/blob")
