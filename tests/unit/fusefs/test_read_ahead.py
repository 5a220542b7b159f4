import random
from pathlib import Path

import pytest
import trio
import trio.testing

from lazyfly.errors import Unavailable
from lazyfly.fusefs.blob_reader import BlobReader
from lazyfly.fusefs.read_ahead import QUEUE_LIMIT, ReadAhead, ReadAheadPolicy, SequentialWindow

MiB = 1 << 20
BIG = 1 << 30
POLICY = ReadAheadPolicy(sequential_reads=2, initial=4 * MiB, maximum=16 * MiB)


def _reads(window: SequentialWindow, offsets: list[int], size: int = MiB, file_size: int = BIG) -> list:
    return [window.on_read(offset, size, file_size) for offset in offsets]


def test_a_second_read_in_a_row_opens_the_initial_window_behind_the_reader():
    window = SequentialWindow(POLICY)
    assert _reads(window, [0, MiB]) == [None, (2 * MiB, 6 * MiB)]


def test_the_window_doubles_once_the_reader_is_within_half_of_it_up_to_the_maximum():
    window = SequentialWindow(POLICY)
    asked = [ahead for ahead in _reads(window, [n * MiB for n in range(36)]) if ahead is not None]
    assert asked == [
        (2 * MiB, 6 * MiB),  # 4 MiB
        (6 * MiB, 14 * MiB),  # asked when the reader reached 4 MiB: 8 MiB
        (14 * MiB, 30 * MiB),  # at 8 MiB of 14: 16 MiB, the maximum
        (30 * MiB, 46 * MiB),  # at 22 MiB: 16 MiB again
    ]


def test_a_read_elsewhere_resets_the_window_and_a_new_run_opens_it_again():
    window = SequentialWindow(POLICY)
    _reads(window, [0, MiB, 2 * MiB])
    assert _reads(window, [500 * MiB, 501 * MiB, 502 * MiB]) == [None, None, (503 * MiB, 507 * MiB)]


def test_read_ahead_never_passes_the_end_of_the_file():
    window = SequentialWindow(POLICY)
    assert _reads(window, [0, MiB, 2 * MiB], file_size=3 * MiB + 10) == [None, (2 * MiB, 3 * MiB + 10), None]


def test_a_file_read_in_one_request_gets_no_read_ahead():
    window = SequentialWindow(POLICY)
    assert window.on_read(0, 128 << 10, 100 << 10) is None


def test_a_jump_forward_breaks_the_run_until_reads_are_in_order_again():
    window = SequentialWindow(POLICY)
    assert _reads(window, [0, 2 * MiB, MiB, 2 * MiB, 3 * MiB]) == [None, None, None, None, (4 * MiB, 8 * MiB)]


def test_a_re_read_of_the_last_bytes_keeps_the_run_going():
    window = SequentialWindow(POLICY)
    assert _reads(window, [0, MiB - 4096]) == [None, (2 * MiB - 4096, 6 * MiB - 4096)]


def test_random_small_reads_open_no_window():
    window = SequentialWindow(POLICY)
    rng = random.Random(3)
    offsets = [rng.randrange(BIG // 4096) * 4096 for _ in range(5000)]
    assert set(_reads(window, offsets, size=4096)) == {None}


def test_bad_policies_are_refused():
    for bad in [dict(initial=0), dict(initial=2 * MiB, maximum=MiB), dict(run_limit=0), dict(workers=0)]:
        with pytest.raises(ValueError):
            ReadAheadPolicy(**bad)  # type: ignore[arg-type]


def test_windows_are_kept_for_at_most_max_files_files():
    read_ahead = ReadAhead(POLICY, max_files=2)
    for ino in (1, 2, 3):
        read_ahead.on_read(ino, 0, MiB, BIG)
    assert read_ahead.on_read(1, MiB, MiB, BIG) is None  # file 1's window was dropped: starts over
    assert read_ahead.on_read(3, MiB, MiB, BIG) == (2 * MiB, 6 * MiB)


def _run(fn) -> None:  # type: ignore[no-untyped-def]
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def test_queued_runs_are_fetched_by_the_workers_as_prefetch_requests(tmp_path: Path, built_image, backend):
    refs = built_image.refs("/random-700k")

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        read_ahead = ReadAhead(ReadAheadPolicy(sequential_reads=2, run_limit=1 << 30, workers=2))
        async with trio.open_nursery() as nursery:
            await nursery.start(read_ahead.serve)
            assert read_ahead.submit(reader, 0, refs[:5])
            assert read_ahead.submit(reader, 0, refs[5:])
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert all(reader.cache.is_ready(ref.uncompressed_offset) for ref in refs)
        assert len(backend.requests) == 2 and all(prefetch for *_, prefetch in backend.requests)
        assert (read_ahead.jobs_done, read_ahead.jobs_failed) == (2, 0)
        source = (built_image.source / "random-700k").read_bytes()
        for ref in refs:  # the verified chunks are in the cache for the reads to come
            assert (
                reader.cache.read(ref.uncompressed_offset, ref.uncompressed_size)
                == (source[ref.file_offset :][: ref.uncompressed_size])
            )
        await reader.aclose()

    _run(main)


def test_an_on_demand_read_waits_for_the_read_ahead_instead_of_fetching_again(
    tmp_path: Path, built_image, backend
):
    refs = built_image.refs("/random-700k")
    backend.gate = trio.Event()

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        read_ahead = ReadAhead(ReadAheadPolicy(sequential_reads=2, run_limit=1 << 30, workers=1))
        async with trio.open_nursery() as nursery:
            await nursery.start(read_ahead.serve)
            read_ahead.submit(reader, 0, refs)
            await trio.testing.wait_all_tasks_blocked()
            assert len(backend.requests) == 1 and reader.busy(refs[-1])

            async def release() -> None:
                await trio.testing.wait_all_tasks_blocked()  # the read below waits on the flight
                backend.gate.set()

            nursery.start_soon(release)
            (chunk,) = await reader.read_chunks([refs[-1]])
            nursery.cancel_scope.cancel()
        source = (built_image.source / "random-700k").read_bytes()
        assert chunk == source[refs[-1].file_offset :]
        assert len(backend.requests) == 1
        await reader.aclose()

    _run(main)


def test_a_failed_run_is_counted_and_the_workers_go_on(tmp_path: Path, built_image, backend):
    refs = built_image.refs("/text")

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        read_ahead = ReadAhead(ReadAheadPolicy(sequential_reads=2, run_limit=1 << 30, workers=1))
        async with trio.open_nursery() as nursery:
            await nursery.start(read_ahead.serve)
            backend.fail_with = Unavailable("registry down")
            read_ahead.submit(reader, 0, refs[:3])
            await trio.testing.wait_all_tasks_blocked()
            backend.fail_with = None
            read_ahead.submit(reader, 0, refs[3:6])
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert (read_ahead.jobs_done, read_ahead.jobs_failed) == (1, 1)
        assert not reader.busy(refs[0]) and reader.busy(refs[3])  # failed chunks are free again
        await reader.aclose()

    _run(main)


def test_a_full_queue_drops_new_runs(tmp_path: Path, built_image, backend):
    refs = built_image.refs("/text")

    async def main() -> None:
        reader = BlobReader.open(tmp_path, built_image.blob, backend)
        read_ahead = ReadAhead()  # not served: nothing takes jobs off the queue
        assert all(read_ahead.submit(reader, 0, refs[:1]) for _ in range(QUEUE_LIMIT))
        assert not read_ahead.submit(reader, 0, refs[:1])
        assert read_ahead.jobs_dropped == 1 and backend.requests == []
        await reader.aclose()

    _run(main)


def test_the_default_policy_waits_for_eight_reads_in_a_row():
    window = SequentialWindow(ReadAheadPolicy())
    asked = _reads(window, [n * MiB for n in range(8)])
    assert asked[:7] == [None] * 7 and asked[7] is not None


def test_a_read_ahead_setting_caps_the_first_window_and_each_backend_request():
    read_ahead = ReadAhead.up_to(2 * MiB)
    asked = [read_ahead.on_read(1, n * MiB, MiB, BIG) for n in range(12)]
    windows = [ahead for ahead in asked if ahead is not None]
    assert windows and all(stop - start <= 2 * MiB for start, stop in windows)
    assert read_ahead.policy.run_limit == 2 * MiB
    assert ReadAhead.up_to(1 << 30).policy.run_limit == ReadAheadPolicy().run_limit


def test_a_read_ahead_setting_of_zero_never_reads_ahead():
    read_ahead = ReadAhead.up_to(0)
    assert [read_ahead.on_read(1, n * MiB, MiB, BIG) for n in range(64)] == [None] * 64


def test_a_negative_read_ahead_setting_is_refused():
    with pytest.raises(ValueError, match="negative"):
        ReadAhead.up_to(-1)
