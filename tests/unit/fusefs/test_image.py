"""MountedImage.read called directly: cheap hits, views instead of copies, and when read-ahead starts."""

import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
import trio.testing
from fixtures.memory_maps import mapped_kib

from lazyfly.format.layout import Inode
from lazyfly.fusefs.blob_reader import DEFAULT_MERGE_LIMIT
from lazyfly.fusefs.chunk_cache import MAPPED_READ_MIN
from lazyfly.fusefs.image import MountedImage
from lazyfly.fusefs.read_ahead import ReadAhead, ReadAheadPolicy
from lazyfly.fusefs.reader_pool import ReaderPool

CHUNK = 64 << 10
SMALL_WINDOWS = ReadAheadPolicy(sequential_reads=2, initial=2 * CHUNK, maximum=4 * CHUNK, run_limit=2 * CHUNK)


def _image(built_image, backend, cache: Path, read_amplify: int = 0) -> MountedImage:
    pool = ReaderPool()
    pool.hold_backend(backend)
    readers = [pool.acquire(cache, built_image.blob, backend, DEFAULT_MERGE_LIMIT)]
    return MountedImage(
        "img", 1, built_image.bootstrap, readers, backend, pool,
        read_amplify=read_amplify, read_ahead=ReadAhead(SMALL_WINDOWS),
    )  # fmt: skip


def _inode(image: MountedImage, path: str) -> Inode:
    return image.bootstrap.inode(image.bootstrap.resolve(path))


def _run(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_cached_range_in_one_span_is_one_read_of_the_cache_file(
    tmp_path: Path, built_image, backend, monkeypatch
):
    source = (built_image.source / "text").read_bytes()

    async def main() -> None:
        image = _image(built_image, backend, tmp_path)
        inode = _inode(image, "/text")
        assert await image.read(inode, 0, inode.size) == source
        requests = len(backend.requests)
        spans: list[tuple[int, int]] = []
        cache = image.readers[0].cache
        read_span = cache.read_span
        monkeypatch.setattr(
            cache, "read_span", lambda offset, size: spans.append((offset, size)) or read_span(offset, size)
        )
        for offset, size in [(0, 1 << 20), (5, 3 * CHUNK), (inode.size - 100, 4096)]:
            got = await image.read(inode, offset, size)
            assert got == source[offset : offset + size]
        assert len(spans) == 3 and len(backend.requests) == requests
        await image.aclose()

    _run(main)


def test_a_cached_range_with_a_hole_reads_zeros_there(tmp_path: Path, built_image, backend):
    source = (built_image.source / "holey").read_bytes()

    async def main() -> None:
        image = _image(built_image, backend, tmp_path)
        inode = _inode(image, "/holey")
        await image.read(inode, 0, inode.size)
        assert await image.read(inode, 0, inode.size) == source
        await image.aclose()

    _run(main)


def test_a_missed_range_is_fetched_then_read_from_the_cache_file(
    tmp_path: Path, built_image, backend, monkeypatch
):
    source = (built_image.source / "random-700k").read_bytes()  # incompressible: stored as is
    spans: list[tuple[int, int]] = []

    async def main() -> None:
        image = _image(built_image, backend, tmp_path)
        cache = image.readers[0].cache
        read_span = cache.read_span
        monkeypatch.setattr(
            cache, "read_span", lambda offset, size: spans.append((offset, size)) or read_span(offset, size)
        )
        got = await image.read(_inode(image, "/random-700k"), CHUNK + 10, 4096)
        assert got == source[CHUNK + 10 : CHUNK + 10 + 4096]
        assert len(backend.requests) == 1 and len(spans) == 1 and spans[0][1] == 4096
        await image.aclose()

    _run(main)


def _read_ahead_requests(backend, start: int) -> list[tuple[int, int]]:
    return [(offset, length) for offset, length, prefetch in backend.requests[start:] if prefetch]


def test_sequential_reads_of_a_file_read_ahead_within_that_file(tmp_path: Path, built_image, backend):
    source = (built_image.source / "random-700k").read_bytes()
    refs = built_image.refs("/random-700k")
    own = {(ref.compressed_offset, ref.compressed_size) for ref in refs}

    async def main() -> None:
        image = _image(built_image, backend, tmp_path)
        inode = _inode(image, "/random-700k")
        async with trio.open_nursery() as nursery:
            await nursery.start(image.read_ahead.serve)
            assert await image.read(inode, 0, CHUNK) == source[:CHUNK]
            await trio.testing.wait_all_tasks_blocked()
            assert _read_ahead_requests(backend, 0) == []  # one read says nothing yet
            assert await image.read(inode, CHUNK, CHUNK) == source[CHUNK : 2 * CHUNK]
            await trio.testing.wait_all_tasks_blocked()
            first = _read_ahead_requests(backend, 0)
            assert first == [(refs[2].compressed_offset, 2 * CHUNK)]  # the initial window, one run
            for offset in range(2 * CHUNK, inode.size, CHUNK):
                assert await image.read(inode, offset, CHUNK) == source[offset : offset + CHUNK]
                await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        on_demand = [(offset, length) for offset, length, prefetch in backend.requests if not prefetch]
        assert len(on_demand) == 2  # every later read found its chunks read ahead
        fetched = {(o, n) for o, n in _read_ahead_requests(backend, 0)}
        assert all(any(o <= ref[0] < o + n for o, n in fetched) for ref in own - set(on_demand))
        last = refs[-1]
        assert max(o + n for o, n in fetched) == last.compressed_offset + last.compressed_size  # not past EOF
        await image.aclose()

    _run(main)


def test_random_reads_and_whole_small_files_read_nothing_ahead(tmp_path: Path, built_image, backend):
    rng = random.Random(9)

    async def main() -> None:
        image = _image(built_image, backend, tmp_path)
        async with trio.open_nursery() as nursery:
            await nursery.start(image.read_ahead.serve)
            for path in built_image.files:
                inode = _inode(image, path)
                await image.read(inode, 0, 128 << 10)
                for _ in range(5):
                    await image.read(inode, rng.randrange(inode.size), 4096)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert _read_ahead_requests(backend, 0) == []
        await image.aclose()

    _run(main)


def test_a_cold_sequential_read_is_served_from_the_cache_file_keeping_one_requests_pages_mapped(
    tmp_path: Path, built_image, backend
):
    source = (built_image.source / "random-700k").read_bytes()
    span = MAPPED_READ_MIN

    async def main() -> None:
        image = _image(built_image, backend, tmp_path)
        inode = _inode(image, "/random-700k")
        cache = image.readers[0].cache
        async with trio.open_nursery() as nursery:
            await nursery.start(image.read_ahead.serve)
            for offset in range(0, inode.size, span):
                got = await image.read(inode, offset, span)
                assert got == source[offset : offset + span], offset  # touches every byte served
                # the last view, plus what the kernel maps around a fault (fault_around_bytes, 64 KiB)
                assert mapped_kib(cache.data_path) <= (span >> 10) + 64 + 4, offset
            nursery.cancel_scope.cancel()
        backend.requests.clear()
        assert await image.read(inode, 0, inode.size) == source  # every chunk was cached
        assert backend.requests == []
        await image.aclose()

    trio.run(main)  # a real clock: fetched chunks are verified in worker threads
