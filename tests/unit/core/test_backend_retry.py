import trio
import trio.testing

from lazyfly.backend.retry import RetryPolicy, retrying
from lazyfly.backend.stats import BackendStats
from lazyfly.errors import NotFound, Unavailable


def run(fn):
    return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def test_bound_is_tries_times_timeout_plus_capped_backoff():
    policy = RetryPolicy(tries=4, attempt_timeout=10, backoff_first=0.2, backoff_max=0.5)
    assert policy.bound() == 4 * 10 + 0.2 + 0.4 + 0.5


def test_a_stalled_attempt_gives_unavailable_within_the_bound():
    policy = RetryPolicy(tries=3, attempt_timeout=5)
    stats = BackendStats()

    async def main() -> float:
        async def stall() -> bytes:
            await trio.sleep_forever()
            raise AssertionError

        try:
            await retrying(policy, stall, "bytes 0-0 of blob x", stats)
        except Unavailable as exc:
            assert "no answer within 5 s (try 3 of 3)" in str(exc)
        return trio.current_time()

    assert 3 * 5 <= run(main) <= policy.bound()
    assert stats.retries == 2


def test_unavailable_is_retried_until_an_attempt_succeeds():
    answers = [Unavailable("down"), Unavailable("down"), b"data"]

    async def attempt() -> bytes:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def main() -> bytes:
        return await retrying(RetryPolicy(tries=3, attempt_timeout=1), attempt, "x")

    assert run(main) == b"data"


def test_not_found_is_final_on_the_first_try():
    calls = 0

    async def attempt() -> bytes:
        nonlocal calls
        calls += 1
        raise NotFound("blob sha256:ab not found")

    async def main() -> None:
        try:
            await retrying(RetryPolicy(tries=4, attempt_timeout=1), attempt, "x")
        except NotFound:
            return
        raise AssertionError("NotFound expected")

    run(main)
    assert calls == 1
