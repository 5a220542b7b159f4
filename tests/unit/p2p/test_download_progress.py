import pytest
import trio
import trio.testing

from lazyfly.errors import NotFound, Unavailable
from lazyfly.p2p.download.progress import TaskProgress


def _run(main) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_waiter_wakes_when_its_piece_lands_and_is_urgent_meanwhile():
    async def main() -> None:
        progress = TaskProgress("t" * 64)
        progress.begin_run(None)
        progress.start(40, 10, [])
        woke = []

        async def reader() -> None:
            await progress.wait_piece(3)
            woke.append(3)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep(1)
            assert progress.urgent == {3} and not woke
            assert sorted(range(4), key=progress.order) == [3, 0, 1, 2]
            progress.add(3)
        assert woke == [3] and progress.urgent == set()

    _run(main)


def test_a_reader_of_a_piece_no_download_fetches_gets_not_found():
    async def main() -> None:
        progress = TaskProgress("t" * 64)
        progress.begin_run({0})
        progress.start(40, 10, [])
        progress.add(0)
        progress.end_run()
        with pytest.raises(NotFound):
            await progress.wait_piece(2)

    _run(main)


def test_a_failed_download_wakes_its_readers_with_the_error():
    async def main() -> None:
        progress = TaskProgress("t" * 64)
        progress.begin_run(None)
        progress.start(40, 10, [])

        async def fail_later() -> None:
            await trio.sleep(1)
            progress.end_run(Unavailable("origin gone"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail_later)
            with pytest.raises(Unavailable, match="origin gone"):
                await progress.wait_piece(1)

    _run(main)


def test_coverage_follows_the_downloads_in_flight():
    progress = TaskProgress("t" * 64)
    progress.start(40, 10, [0])
    assert not progress.covers({1})
    progress.begin_run({1, 2})
    assert progress.covers({1}) and progress.covers({0, 2}) and not progress.covers({3})
    assert progress.uncovered() == {3}
    progress.begin_run(None)
    assert progress.covers(None) and progress.uncovered() == set()
    progress.end_run()
    progress.end_run()
    assert not progress.covers({3}) and progress.in_use is False
