"""The BlobBackend conformance suite: the rules of lazyfly/backend/base.py, checked on every backend.

Use: put the blobs of `suite_blobs()` where a backend can read them, then subclass
`BlobBackendSuite` in a test module and give it a fixture `backend_source` returning a
`BackendSource` (a factory of fresh backends over those blobs). The module must provide an
`anyio_backend` fixture ("trio": fusefs runs on trio); each test opens its own backend and closes it.
"""

import hashlib
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest

from lazyfly.backend.base import BlobBackend, read_range
from lazyfly.errors import FailedPrecondition, InvalidArgument, NotFound

MISSING_DIGEST = "sha256:" + hashlib.sha256(b"no blob has these bytes").hexdigest()
CALL_TIMEOUT = 60  # a hang fails the test instead of stalling the suite; no speed is asserted


def suite_blobs() -> dict[str, bytes]:
    """Return the blobs every backend under test must serve, by sha256 digest."""
    rng = random.Random(20240611)
    contents = [b"x", rng.randbytes(4096), rng.randbytes(300_000), rng.randbytes(3 * 1024 * 1024 + 17)]
    return {"sha256:" + hashlib.sha256(data).hexdigest(): data for data in contents}


@dataclass
class BackendSource:
    """Makes backends that serve `blobs` (digest -> bytes)."""

    open: Callable[[], BlobBackend]
    blobs: dict[str, bytes]

    def largest(self) -> tuple[str, bytes]:
        """Return (digest, bytes) of the largest blob."""
        return max(self.blobs.items(), key=lambda item: len(item[1]))


@asynccontextmanager
async def opened(source: BackendSource) -> AsyncIterator[BlobBackend]:
    """Open a backend for one test and always close it."""
    backend = source.open()
    try:
        yield backend
    finally:
        await backend.aclose()


class CollectingSink:
    """A RangeSink that keeps a copy of every piece, and counts deliveries started."""

    def __init__(self, piece_sizes: list[int]) -> None:
        self.piece_sizes = piece_sizes
        self.buffer = bytearray(max(piece_sizes, default=0))
        self.pieces: list[bytes] = []
        self.restarts = 0
        self.received_in_place = 0  # pieces the backend received straight into `buffer`

    def restart(self) -> None:
        self.restarts += 1
        self.pieces = []

    def take(self, piece: memoryview) -> None:
        self.pieces.append(bytes(piece))
        self.received_in_place += piece.obj is self.buffer


async def read_into(backend: BlobBackend, digest: str, offset: int, sink: CollectingSink, **kw: bool) -> None:
    """Deliver into `sink` with a generous bound, like `read`."""
    with anyio.fail_after(CALL_TIMEOUT):
        await backend.read_range_into(digest, offset, sink, **kw)


async def read(backend: BlobBackend, digest: str, offset: int, length: int, **kw: bool) -> bytearray:
    """Read with a generous bound, so a hanging backend fails instead of stalling."""
    with anyio.fail_after(CALL_TIMEOUT):
        return await read_range(backend, digest, offset, length, **kw)


@pytest.mark.anyio
class BlobBackendSuite:
    """Conformance tests; subclasses provide the `backend_source` fixture."""

    async def test_ranges_at_start_middle_and_end_are_exact(self, backend_source: BackendSource):
        async with opened(backend_source) as backend:
            for digest, data in backend_source.blobs.items():
                size = len(data)
                for offset, length in [(0, min(size, 100)), (size // 3, max(1, size // 3)), (size - 1, 1)]:
                    assert await read(backend, digest, offset, length) == data[offset : offset + length]
                tail = min(size, 5000)
                assert await read(backend, digest, size - tail, tail) == data[size - tail :]

    async def test_length_one_reads_return_one_byte(self, backend_source: BackendSource):
        digest, data = backend_source.largest()
        async with opened(backend_source) as backend:
            for offset in (0, 1, 4095, 4096, len(data) // 2, len(data) - 1):
                assert await read(backend, digest, offset, 1) == data[offset : offset + 1]

    async def test_whole_blob_reads_return_the_blob(self, backend_source: BackendSource):
        async with opened(backend_source) as backend:
            for digest, data in backend_source.blobs.items():
                assert await read(backend, digest, 0, len(data)) == data

    async def test_prefetch_reads_return_the_same_bytes(self, backend_source: BackendSource):
        digest, data = backend_source.largest()
        async with opened(backend_source) as backend:
            assert await read(backend, digest, 1000, 70_000, prefetch=True) == data[1000:71_000]

    async def test_zero_length_read_is_empty(self, backend_source: BackendSource):
        digest, _ = backend_source.largest()
        async with opened(backend_source) as backend:
            assert await read(backend, digest, 10, 0) == b""

    async def test_missing_digest_is_not_found_naming_it(self, backend_source: BackendSource):
        async with opened(backend_source) as backend:
            with pytest.raises(NotFound, match=MISSING_DIGEST):
                await read(backend, MISSING_DIGEST, 0, 10)
            assert backend.stats.errors == 1  # type: ignore[attr-defined]

    async def test_range_past_the_end_is_not_found(self, backend_source: BackendSource):
        digest, data = backend_source.largest()
        size = len(data)
        async with opened(backend_source) as backend:
            for offset, length in [(size - 10, 11), (size, 1), (size + 4096, 100), (0, size + 1)]:
                with pytest.raises(NotFound, match=digest):
                    await read(backend, digest, offset, length)

    async def test_bad_arguments_are_invalid(self, backend_source: BackendSource):
        digest, _ = backend_source.largest()
        async with opened(backend_source) as backend:
            with pytest.raises(InvalidArgument):
                await read(backend, digest, -1, 10)
            with pytest.raises(InvalidArgument):
                await read(backend, digest, 0, -1)
            with pytest.raises(InvalidArgument):
                await read(backend, "sha256:not-hex", 0, 1)

    async def test_fifty_concurrent_reads_are_all_right(self, backend_source: BackendSource):
        digest, data = backend_source.largest()
        rng = random.Random(7)
        ranges = [(rng.randrange(len(data) - 65536), rng.randrange(1, 65536)) for _ in range(50)]
        results: dict[int, bytes] = {}

        async with opened(backend_source) as backend:

            async def one(i: int, offset: int, length: int) -> None:
                results[i] = await read(backend, digest, offset, length)

            async with anyio.create_task_group() as tg:
                for i, (offset, length) in enumerate(ranges):
                    tg.start_soon(one, i, offset, length)
        for i, (offset, length) in enumerate(ranges):
            assert results[i] == data[offset : offset + length], f"read {i} ({offset}, {length})"

    async def test_stats_count_requests_and_bytes(self, backend_source: BackendSource):
        digest, _ = backend_source.largest()
        async with opened(backend_source) as backend:
            await read(backend, digest, 0, 100)
            await read(backend, digest, 100, 23)
            stats = backend.stats  # type: ignore[attr-defined]
            assert (stats.requests, stats.bytes, stats.errors) == (2, 123, 0)

    async def test_a_range_delivered_into_a_sink_comes_in_its_pieces_in_order(
        self, backend_source: BackendSource
    ):
        digest, data = backend_source.largest()
        sizes = [1, 4095, 70_000, 1 << 20, 3]
        async with opened(backend_source) as backend:
            for prefetch in (False, True):
                sink = CollectingSink(sizes)
                await read_into(backend, digest, 500, sink, prefetch=prefetch)
                assert [len(piece) for piece in sink.pieces] == sizes and sink.restarts >= 1
                assert b"".join(sink.pieces) == data[500 : 500 + sum(sizes)]
            stats = backend.stats  # type: ignore[attr-defined]
            assert (stats.requests, stats.bytes, stats.errors) == (2, 2 * sum(sizes), 0)

    async def test_a_delivery_past_the_end_or_after_aclose_fails_like_a_read(
        self, backend_source: BackendSource
    ):
        digest, data = backend_source.largest()
        backend = backend_source.open()
        try:
            with pytest.raises(NotFound, match=digest):
                await read_into(backend, digest, len(data) - 10, CollectingSink([5, 6]))
            with pytest.raises(NotFound, match=MISSING_DIGEST):
                await read_into(backend, MISSING_DIGEST, 0, CollectingSink([10]))
            empty = CollectingSink([])
            await read_into(backend, digest, 0, empty)
            assert empty.pieces == [] and empty.restarts == 0
        finally:
            await backend.aclose()
        with pytest.raises(FailedPrecondition):
            await read_into(backend, digest, 0, CollectingSink([10]))

    async def test_aclose_is_idempotent_and_final(self, backend_source: BackendSource):
        digest, data = backend_source.largest()
        backend = backend_source.open()
        assert await read(backend, digest, 0, 10) == data[:10]
        await backend.aclose()
        await backend.aclose()
        with pytest.raises(FailedPrecondition):
            await read(backend, digest, 0, 10)

    async def test_aclose_of_an_unused_backend_is_fine(self, backend_source: BackendSource):
        backend = backend_source.open()
        await backend.aclose()
        await backend.aclose()
        assert backend.name in ("local", "registry", "proxy")
