"""Token buckets for the peer's bandwidth limits: download, upload and prefetch (bytes per second).

Rules:
- Rule 1: `acquire(n)` returns once n tokens were taken; tokens refill at `rate` per second up to
  `burst`. A request bigger than the burst is let through once the bucket is full, leaving a debt
  that later callers wait out, so a 64 MiB piece never waits forever behind a 4 MiB burst.
- Rule 2: a rate of 0 (or None) means unlimited: acquire never waits.
- Rule 3: waiters are served in arrival order (one lock), so a stream of small requests cannot
  starve a big one.
"""

import time
from collections.abc import Callable

import anyio


class RateLimiter:
    """A token bucket of `rate` bytes per second holding at most `burst` bytes."""

    def __init__(
        self, rate: float | None, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate or 0.0
        self.burst = burst if burst is not None else max(self.rate, 1.0)
        self.clock = clock
        self.tokens = self.burst
        self.updated = clock()
        self._lock = anyio.Lock()

    @property
    def unlimited(self) -> bool:
        """Whether this limiter never waits (Rule 2)."""
        return self.rate <= 0

    async def acquire(self, amount: int) -> None:
        """Take `amount` tokens, waiting for them as Rule 1 says."""
        if self.unlimited or amount <= 0:
            return
        async with self._lock:
            self._refill()
            needed = min(amount, self.burst)
            if self.tokens < needed:
                await anyio.sleep((needed - self.tokens) / self.rate)
                self._refill()
            self.tokens -= amount

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
