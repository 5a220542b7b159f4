import pytest
import trio
import trio.testing

from lazyfly.errors import Corrupt
from lazyfly.fusefs.inflight import Abandoned, InFlight


class GatedFetch:
    """A fetch that counts its calls and finishes when the test sends it an outcome."""

    def __init__(self) -> None:
        self.calls = 0
        self.send, self.receive = trio.open_memory_channel[object](100)

    async def __call__(self) -> str:
        self.calls += 1
        outcome = await self.receive.receive()
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)


def _run(fn) -> None:
    trio.run(fn, clock=trio.testing.MockClock())


def test_concurrent_callers_of_one_key_share_one_fetch():
    async def main() -> None:
        table: InFlight[str, str] = InFlight()
        fetch = GatedFetch()
        results: list[str] = []

        async def caller() -> None:
            results.append(await table.run("k", fetch))

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            assert fetch.calls == 1 and len(table) == 1 and "k" in table
            await fetch.send.send("value")
        assert results == ["value"] * 16 and len(table) == 0

    _run(main)


def test_different_keys_fetch_independently():
    async def main() -> None:
        table: InFlight[int, str] = InFlight()
        fetches = {1: GatedFetch(), 2: GatedFetch()}
        async with trio.open_nursery() as nursery:
            for key, fetch in fetches.items():
                nursery.start_soon(table.run, key, fetch)
            await trio.testing.wait_all_tasks_blocked()
            assert len(table) == 2
            for fetch in fetches.values():
                await fetch.send.send("x")
        assert [f.calls for f in fetches.values()] == [1, 1]

    _run(main)


def test_a_failed_fetch_raises_in_every_waiter_and_the_next_call_fetches_again():
    async def main() -> None:
        table: InFlight[str, str] = InFlight()
        fetch = GatedFetch()
        errors: list[BaseException] = []

        async def caller() -> None:
            try:
                await table.run("k", fetch)
            except Corrupt as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            await fetch.send.send(Corrupt("chunk 7 is bad"))
        assert len(errors) == 5 and all("chunk 7 is bad" in str(e) for e in errors)
        assert len({id(e) for e in errors}) == 5  # each waiter raises its own exception object
        assert len(table) == 0
        await fetch.send.send("fine")
        assert await table.run("k", fetch) == "fine" and fetch.calls == 2

    _run(main)


def test_cancelling_the_caller_that_started_the_fetch_does_not_strand_the_waiters():
    async def main() -> None:
        table: InFlight[str, str] = InFlight()
        fetch = GatedFetch()
        results: list[str] = []
        first_cancelled = False

        async def first(task_status=trio.TASK_STATUS_IGNORED) -> None:
            nonlocal first_cancelled
            with trio.CancelScope() as scope:
                task_status.started(scope)
                await table.run("k", fetch)
            first_cancelled = scope.cancelled_caught

        async def waiter() -> None:
            results.append(await table.run("k", fetch))

        async with trio.open_nursery() as nursery:
            scope = await nursery.start(first)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert fetch.calls == 1
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert fetch.calls == 2 and len(table) == 1  # one waiter took over, the others wait on it
            await fetch.send.send("value")
        assert first_cancelled and results == ["value"] * 3 and len(table) == 0

    _run(main)


def test_a_cancelled_waiter_leaves_the_fetch_and_other_waiters_alone():
    async def main() -> None:
        table: InFlight[str, str] = InFlight()
        fetch = GatedFetch()
        results: list[str] = []

        async def caller() -> None:
            results.append(await table.run("k", fetch))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(1):
                await table.run("k", fetch)  # a waiter that gives up
            nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            await fetch.send.send("v")
        assert results == ["v", "v"] and fetch.calls == 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_oldest_start_is_the_first_claim_still_running():
    async def main(clock: trio.testing.MockClock) -> None:
        table: InFlight[str, int] = InFlight()
        assert table.oldest_start() is None
        a = table.try_claim("a")
        clock.jump(5)
        b = table.try_claim("b")
        assert a is not None and b is not None
        assert table.try_claim("a") is None and table.get("a") is a
        assert table.oldest_start() == a.started and trio.current_time() - a.started == 5
        a.set_result(1)
        assert table.oldest_start() == b.started
        b.abandon()
        assert table.oldest_start() is None and len(table) == 0

    clock = trio.testing.MockClock()
    trio.run(main, clock, clock=clock)


def test_a_flight_settles_once_and_abandon_after_a_result_is_a_no_op():
    async def main() -> None:
        table: InFlight[str, int] = InFlight()
        flight = table.try_claim("k")
        assert flight is not None
        flight.set_result(1)
        flight.abandon()
        flight.set_error(ValueError("late"))
        assert flight.settled and await flight.wait() == 1

        abandoned = table.try_claim("k")
        assert abandoned is not None
        abandoned.abandon()
        with pytest.raises(Abandoned):
            await abandoned.wait()

    _run(main)
