import trio
import trio.testing

from lazyfly.p2p.rate_limiter import RateLimiter


def _run(main) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_acquiring_three_bursts_takes_two_bursts_of_refill_time():
    async def main() -> None:
        limiter = RateLimiter(1000, burst=1000, clock=trio.current_time)
        began = trio.current_time()
        for _ in range(3):
            await limiter.acquire(1000)
        assert trio.current_time() - began >= 2.0

    _run(main)


def test_a_request_bigger_than_the_burst_passes_and_leaves_a_debt():
    async def main() -> None:
        limiter = RateLimiter(1000, burst=100, clock=trio.current_time)
        began = trio.current_time()
        await limiter.acquire(5000)
        assert trio.current_time() - began < 0.5
        await limiter.acquire(100)
        assert trio.current_time() - began >= 5.0

    _run(main)


def test_a_rate_of_zero_never_waits():
    async def main() -> None:
        limiter = RateLimiter(0, clock=trio.current_time)
        assert limiter.unlimited
        await limiter.acquire(10**12)
        assert trio.current_time() == 0

    _run(main)
