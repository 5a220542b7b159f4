"""Retries for network reads: bounded attempts, exponential backoff with jitter, a timeout per attempt.

Rules kept:

- Rule 1: every attempt runs inside `anyio.fail_after(attempt_timeout)`; an attempt that times out
  counts as Unavailable. So a dead or stalled server gives Unavailable after at most
  `RetryPolicy.bound()` seconds: `tries × attempt_timeout` plus the backoff sleeps, each at most
  `min(backoff_max, backoff_first × 2**n)` (n = 0 … tries-2). The final error names the read and
  the number of tries, and chains the last attempt's error.
- Rule 2: only Unavailable (connection failures, 5xx, timeouts) is retried. NotFound,
  authentication failures, bad arguments and protocol violations are final on the first try.
- Rule 3: "equal jitter": the sleep after failed try n is uniform in [d/2, d] with
  d = min(backoff_max, backoff_first × 2**n), so many readers of one dead server do not retry in step.
"""

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from lazyfly.backend.stats import BackendStats
from lazyfly.errors import Unavailable

T = TypeVar("T")

DEFAULT_ATTEMPT_TIMEOUT = 15.0
DEFAULT_TRIES = 4
DEFAULT_PREFETCH_TRIES = 2
DEFAULT_BACKOFF_FIRST = 0.2
DEFAULT_BACKOFF_MAX = 2.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to try one read."""

    tries: int = DEFAULT_TRIES
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT
    backoff_first: float = DEFAULT_BACKOFF_FIRST
    backoff_max: float = DEFAULT_BACKOFF_MAX

    def __post_init__(self) -> None:
        if self.tries < 1 or self.attempt_timeout <= 0:
            raise ValueError(f"bad retry policy: tries={self.tries}, attempt_timeout={self.attempt_timeout}")

    def backoff(self, attempt: int) -> float:
        """Return the longest sleep after failed try number `attempt` (0-based)."""
        return min(self.backoff_max, self.backoff_first * 2**attempt)

    def bound(self) -> float:
        """Return the longest time a retried call can take before it raises (Rule 1)."""
        return self.tries * self.attempt_timeout + sum(self.backoff(n) for n in range(self.tries - 1))


async def retrying(
    policy: RetryPolicy, attempt: Callable[[], Awaitable[T]], what: str, stats: BackendStats | None = None
) -> T:
    """Run `attempt` under `policy`; return its result or raise its last error (Unavailable on timeout)."""
    for n in range(policy.tries):
        try:
            with anyio.fail_after(policy.attempt_timeout):
                return await attempt()
        except TimeoutError as exc:
            error: Unavailable = Unavailable(
                f"{what}: no answer within {policy.attempt_timeout} s (try {n + 1} of {policy.tries})"
            )
            error.__cause__ = exc
        except Unavailable as exc:
            error = exc
        if n == policy.tries - 1:
            raise Unavailable(f"{what}: gave up after {policy.tries} tries; last error: {error}") from error
        if stats is not None:
            stats.retries += 1
        delay = policy.backoff(n)
        await anyio.sleep(random.uniform(delay / 2, delay))
    raise AssertionError("unreachable: the last try returns or raises")
