import dataclasses
import itertools
import logging
import random
import shutil
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from lazyfly.compression import Compressor
from lazyfly.errors import Corrupt, Unavailable
from lazyfly.format.layout import ChunkRef
from lazyfly.fusefs.blob_reader import BlobReader, plan_runs
from lazyfly.range_sink import RangeSink, range_length


def _run(fn, *args) -> None:
    trio.run(fn, *args, clock=trio.testing.MockClock())


def test_random_ranges_of_random_files_equal_the_source(tmp_path: Path, built_image, backend, file_reader):
    rng = random.Random(1)
    sources = {p: (built_image.source / p.lstrip("/")).read_bytes() for p in built_image.files}

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        for _ in range(300):
            path = rng.choice(built_image.files)
            data = sources[path]
            offset = rng.randrange(len(data) + 1)
            length = rng.choice([1, 4096, 65536, 131072, rng.randrange(1, 400_000)])
            got = await file_reader(reader, built_image, path, offset, length)
            assert got == data[offset : offset + length], (path, offset, length)
        for path, data in sources.items():
            assert await file_reader(reader, built_image, path, 0, len(data)) == data
        stats = reader.stats
        assert stats.cache_hits > 0 and stats.cache_misses > 0 and stats.digest_failures == 0
        assert stats.bytes_fetched == backend.bytes and stats.inflight == 0
        await reader.aclose()

    _run(main)


def test_sixteen_readers_of_one_cold_chunk_make_one_backend_request(tmp_path: Path, built_image, backend):
    ref = built_image.refs("/random-700k")[3]
    backend.gate = trio.Event()

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        results: list[bytes] = []

        async def read() -> None:
            results.extend(await reader.read_chunks([ref]))

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            assert len(backend.requests) == 1 and reader.stats.inflight == 1
            backend.gate.set()
        assert backend.requests == [(ref.compressed_offset, ref.compressed_size, False)]
        source = (built_image.source / "random-700k").read_bytes()
        assert results == [source[ref.file_offset : ref.file_offset + ref.uncompressed_size]] * 16
        assert reader.stats.cache_misses == 16 and reader.cache.is_ready(ref.uncompressed_offset)
        await reader.aclose()

    _run(main)


@pytest.mark.parametrize(("gap", "requests"), [(0, 3), (16 << 10, 2)])
def test_adjacent_missing_chunks_are_merged_into_one_request(
    tmp_path: Path, built_image, backend, gap: int, requests: int
):
    refs = built_image.refs("/text")  # compresses well: chunks 2..8 take far less than 16 KiB
    assert len(refs) > 10

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend, merge_gap=gap)
        await reader.read_chunks(refs[2:9])
        start, end = refs[2].compressed_offset, refs[8].compressed_offset + refs[8].compressed_size
        assert backend.requests == [(start, end - start, False)]
        # 2..8 are ready: 0-1 and 9-11 are two runs, or one across the small gap of ready chunks.
        await reader.read_chunks(refs[:12])
        assert len(backend.requests) == requests
        assert reader.cache.map.ready_count() == 12
        await reader.aclose()

    _run(main)


def test_merged_requests_respect_the_merge_limit(tmp_path: Path, built_image, backend):
    refs = built_image.refs("/random-700k")  # incompressible: 64 KiB stored per chunk
    limit = 150 << 10

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend, merge_limit=limit)
        await reader.read_chunks(refs)
        assert len(backend.requests) == len(plan_runs(refs, limit, reader.merge_gap)) == -(-len(refs) // 2)
        assert all(length <= limit for _, length, _ in backend.requests)
        covered = sorted((off, off + length) for off, length, _ in backend.requests)
        assert covered[0][0] == refs[0].compressed_offset
        assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
        await reader.aclose()

    _run(main)


def test_prefetch_plans_runs_with_the_callers_merge_limit(tmp_path: Path, built_image, backend):
    refs = built_image.refs("/random-700k")

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend, merge_limit=64 << 10)
        await reader.prefetch(refs, merge_limit=1 << 30)
        end = refs[-1].compressed_offset + refs[-1].compressed_size
        assert backend.requests == [(refs[0].compressed_offset, end - refs[0].compressed_offset, True)]
        await reader.aclose()

    _run(main)


def test_chunks_stored_as_is_are_served_as_views_of_the_backends_answer(tmp_path: Path, built_image, backend):
    refs = built_image.refs("/random-700k")[:3]  # incompressible: stored without compression
    assert {ref.compressor for ref in refs} == {Compressor.NONE}
    source = (built_image.source / "random-700k").read_bytes()

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        chunks = await reader.read_chunks(refs)
        assert all(isinstance(chunk, memoryview) for chunk in chunks)
        assert len({id(chunk.obj) for chunk in chunks}) == 1  # one answer, never copied
        assert [bytes(chunk) for chunk in chunks] == [
            source[r.file_offset :][: r.uncompressed_size] for r in refs
        ]
        await reader.aclose()

    _run(main)


def _ref(c_off: int, c_size: int, u_off: int) -> ChunkRef:
    return ChunkRef(0, 0, c_off, c_size, u_off, 4096, Compressor.NONE, bytes(32))


def test_plan_runs_merges_within_the_gap_and_never_splits_a_chunk():
    refs = [_ref(0, 100, 0), _ref(100, 100, 4096), _ref(1200, 50, 8192), _ref(5000, 10_000, 12288)]
    assert plan_runs(refs, 1 << 20, 0) == [refs[:2], [refs[2]], [refs[3]]]
    assert plan_runs(refs, 1 << 20, 1000) == [refs[:3], [refs[3]]]
    assert plan_runs(refs, 1 << 20, 4000) == [refs]
    assert plan_runs(list(reversed(refs)), 200, 1 << 20) == [refs[:2], [refs[2]], [refs[3]]]
    assert plan_runs(refs, 199, 1 << 20) == [[r] for r in refs]
    assert plan_runs([refs[3]], 10, 0) == [[refs[3]]]  # bigger than the limit, still one request


def test_plan_runs_puts_refs_whose_stored_bytes_overlap_in_separate_runs():
    first, overlapping, after = _ref(0, 100, 0), _ref(50, 100, 4096), _ref(150, 10, 8192)
    assert plan_runs([first, overlapping, after], 1 << 20, 1000) == [[first], [overlapping, after]]


def _put_byte(path: Path, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes([value]))


def test_a_corrupted_blob_byte_is_never_served_and_the_next_read_fetches_again(
    tmp_path: Path, built_image, counting_backend, file_reader
):
    blob_copy = tmp_path / "blob"
    shutil.copyfile(built_image.blob_path, blob_copy)
    backend = counting_backend({built_image.blob.digest: blob_copy})
    bad, good = built_image.refs("/odd-size")[1:3]
    spot = bad.compressed_offset + bad.compressed_size // 2
    original = blob_copy.read_bytes()[spot]
    _put_byte(blob_copy, spot, original ^ 0x5A)

    async def main() -> None:
        reader = BlobReader.open(tmp_path / "cache", built_image.blob, backend)
        with pytest.raises(Corrupt, match=f"{built_image.blob.digest}.*offset {bad.uncompressed_offset}"):
            await reader.read_chunks([bad, good])
        assert reader.stats.digest_failures == 1 and len(backend.requests) == 1
        assert not reader.cache.is_ready(bad.uncompressed_offset)
        assert not any(reader.cache.read(bad.uncompressed_offset, bad.uncompressed_size))
        assert reader.cache.is_ready(good.uncompressed_offset)  # its neighbour in the run was fine
        with pytest.raises(Corrupt):
            await reader.read_chunks([bad])
        assert reader.stats.digest_failures == 2 and len(backend.requests) == 2
        _put_byte(blob_copy, spot, original)
        source = (built_image.source / "odd-size").read_bytes()
        assert await file_reader(reader, built_image, "/odd-size", 0, len(source)) == source
        assert reader.cache.is_ready(bad.uncompressed_offset)
        await reader.aclose()

    _run(main)


def test_a_reopened_cache_serves_everything_without_the_backend(
    tmp_path: Path, built_image, backend, counting_backend, file_reader
):
    sources = {p: (built_image.source / p.lstrip("/")).read_bytes() for p in built_image.files}

    async def main() -> None:
        first = BlobReader.open(tmp_path, built_image.blob, backend)
        for path, data in sources.items():
            assert await file_reader(first, built_image, path, 0, len(data)) == data
        assert backend.requests
        await first.aclose()
        second_backend = counting_backend({built_image.blob.digest: built_image.blob_path})
        second = BlobReader.open(tmp_path, built_image.blob, second_backend)
        for path, data in sources.items():
            assert await file_reader(second, built_image, path, 0, len(data)) == data
        assert second_backend.requests == [] and second.stats.cache_misses == 0
        assert second.stats.cache_hits == len(built_image.all_refs())
        await second.aclose()

    _run(main)


@pytest.mark.parametrize(
    "change",
    [
        {"uncompressed_offset": 4097},
        {"uncompressed_offset": -4096},
        {"uncompressed_size": 0},
        {"uncompressed_offset": 1 << 40},
        {"uncompressed_size": 1 << 40},
        {"compressed_offset": 1 << 40},
        {"compressed_size": 0},
    ],
)
def test_a_ref_that_does_not_fit_the_blob_is_corrupt(tmp_path: Path, built_image, backend, change):
    ref = dataclasses.replace(built_image.refs("/text")[1], **change)

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        with pytest.raises(Corrupt, match=built_image.blob.digest):
            await reader.read_chunks([built_image.refs("/text")[0], ref])
        with pytest.raises(Corrupt):
            await reader.prefetch([ref])
        assert backend.requests == [] and reader.cache.map.ready_count() == 0
        await reader.aclose()

    _run(main)


def test_a_full_cache_disk_still_serves_the_right_bytes(
    tiny_tmpfs: Path, built_image, backend, file_reader, caplog
):
    sources = {p: (built_image.source / p.lstrip("/")).read_bytes() for p in built_image.files}

    async def main() -> None:
        reader = BlobReader.open(tiny_tmpfs, built_image.blob, backend)
        for _ in range(2):
            for path, data in sources.items():
                assert await file_reader(reader, built_image, path, 0, len(data)) == data
        assert reader.stats.cache_full_events > 0
        await reader.aclose()

    with caplog.at_level(logging.WARNING, logger="lazyfly.fusefs.blob_reader"):
        _run(main)
    assert len([r for r in caplog.records if "no room" in r.getMessage()]) == 1


def test_cancelling_the_first_reader_does_not_strand_the_others(tmp_path: Path, built_image, backend):
    ref = built_image.refs("/text")[4]
    backend.gate = trio.Event()

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        results: list[bytes] = []

        async def first(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                await reader.read_chunks([ref])

        async def other() -> None:
            results.extend(await reader.read_chunks([ref]))

        async with trio.open_nursery() as nursery:
            scope = await nursery.start(first)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                nursery.start_soon(other)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert len(backend.requests) == 2  # one of the others took the fetch over
            backend.gate.set()
        source = (built_image.source / "text").read_bytes()
        assert results == [source[ref.file_offset : ref.file_offset + ref.uncompressed_size]] * 3
        assert reader.stats.inflight == 0
        await reader.aclose()

    _run(main)


def test_a_backend_error_reaches_every_waiter_and_the_next_read_fetches_again(
    tmp_path: Path, built_image, backend
):
    ref = built_image.refs("/mixed")[0]
    backend.gate = trio.Event()
    backend.fail_with = Unavailable("registry down")

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        errors: list[Exception] = []

        async def read() -> None:
            try:
                await reader.read_chunks([ref])
            except Unavailable as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            backend.gate.set()
        assert len(errors) == 4 and len(backend.requests) == 1 and reader.stats.backend_errors == 1
        backend.fail_with = None
        assert len((await reader.read_chunks([ref]))[0]) == ref.uncompressed_size
        assert len(backend.requests) == 2
        await reader.aclose()

    _run(main)


def test_the_in_flight_stats_report_the_oldest_start(tmp_path: Path, built_image, backend):
    refs = built_image.refs("/random-700k")
    backend.gate = trio.Event()

    async def main(clock: trio.testing.MockClock) -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.read_chunks, [refs[0]])
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(7)
            nursery.start_soon(reader.read_chunks, [refs[5]])
            await trio.testing.wait_all_tasks_blocked()
            stats = reader.stats
            assert stats.inflight == 2 and trio.current_time() - stats.oldest_inflight_start == 7
            backend.gate.set()
        assert reader.stats.inflight == 0 and reader.stats.oldest_inflight_start is None
        await reader.aclose()

    clock = trio.testing.MockClock()
    trio.run(main, clock, clock=clock)


def test_prefetch_caches_chunks_in_background_mode_and_skips_ready_ones(tmp_path: Path, built_image, backend):
    refs = built_image.refs("/text")

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        await reader.read_chunks(refs[:2])
        await reader.prefetch(refs)
        assert [p for _, _, p in backend.requests] == [False, True]
        assert backend.requests[1][0] == refs[2].compressed_offset
        assert reader.cache.map.ready_count() == len(refs)
        assert reader.stats.prefetch_bytes == backend.requests[1][1]
        await reader.read_chunks(refs)
        assert len(backend.requests) == 2
        await reader.aclose()

    _run(main)


def test_a_failed_prefetch_hands_its_chunks_to_the_waiting_reader(tmp_path: Path, built_image, backend):
    ref = built_image.refs("/small/deep/d")[0]
    backend.gate = trio.Event()
    backend.fail_with = Unavailable("peer down")

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        got: list[bytes] = []

        async def prefetch() -> None:
            with pytest.raises(Unavailable):
                await reader.prefetch([ref])

        async def read() -> None:
            got.extend(await reader.read_chunks([ref]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(prefetch)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            backend.fail_with = None  # the prefetch request already holds its error
            backend.gate.set()
        assert [p for _, _, p in backend.requests] == [True, False]
        assert got == [(built_image.source / "small/deep/d").read_bytes()]
        await reader.aclose()

    _run(main)


@dataclasses.dataclass
class HalfwayGatedBackend:
    """Delivers a range's first piece, then holds the rest until `rest` is set (a slow registry)."""

    path: Path
    name: str = "gated"
    rest: threading.Event = dataclasses.field(default_factory=threading.Event)

    async def read_range_into(
        self, digest: str, offset: int, sink: RangeSink, *, prefetch: bool = False
    ) -> None:
        data = self.path.read_bytes()[offset : offset + range_length(sink)]

        def deliver() -> None:
            sink.restart()
            at = 0
            for i, size in enumerate(sink.piece_sizes):
                if i == 1 and not self.rest.wait(timeout=30):
                    raise TimeoutError("the test never let the rest of the range through")
                sink.take(memoryview(data)[at : at + size])
                at += size

        await trio.to_thread.run_sync(deliver)

    async def aclose(self) -> None:
        return None


def test_a_chunk_is_served_as_soon_as_it_arrives_not_when_its_run_ends(tmp_path: Path, built_image):
    refs = built_image.refs("/random-700k")
    source = (built_image.source / "random-700k").read_bytes()
    backend = HalfwayGatedBackend(built_image.blob_path)

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.prefetch, refs)  # one run: every chunk of the file
            await trio.testing.wait_all_tasks_blocked()
            with trio.fail_after(10):
                (first,) = await reader.read_chunks([refs[0]])  # while the rest is held back
            assert first == source[: refs[0].uncompressed_size]
            assert reader.cache.is_ready(refs[0].uncompressed_offset)
            assert not reader.cache.is_ready(refs[1].uncompressed_offset)
            backend.rest.set()
        assert all(reader.cache.is_ready(ref.uncompressed_offset) for ref in refs)
        await reader.aclose()

    trio.run(main)  # a real clock: the chunks arrive from a worker thread
