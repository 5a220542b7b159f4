"""Per-backend counters that fusefs exports as Prometheus metrics (it owns the metric names).

Rule: each backend owns one `BackendStats` as its `stats` attribute and only ever increments it;
a read counts once in `requests` however many attempts it took (`retries` counts the extra ones),
and once in `errors` if it finally raised a lazyfly error (cancellation is not an error).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lazyfly.errors import LazyflyError


@dataclass
class BackendStats:
    """Counters of one backend since it was created."""

    requests: int = 0  # read_range_into calls
    bytes: int = 0  # bytes returned by successful reads
    errors: int = 0  # reads that raised a lazyfly error
    retries: int = 0  # attempts beyond the first, over all reads
    fallbacks: int = 0  # reads served by a fallback backend (peer proxy only)


async def counted(stats: BackendStats, read: Callable[[], Awaitable[None]], length: int) -> None:
    """Run one read of `length` bytes, counting it in `stats` (requests, then bytes or errors)."""
    stats.requests += 1
    try:
        await read()
    except LazyflyError:
        stats.errors += 1
        raise
    stats.bytes += length
