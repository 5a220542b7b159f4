"""A connection pool made on first use, shared by concurrent readers, refused once closed.

Both network backends need the same thing: build the client (which may read the Docker config
in a thread) only when the first read arrives, never twice under concurrency, and make every read
after `aclose` fail with FailedPrecondition instead of reopening connections.
"""

from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

import anyio

from lazyfly.errors import FailedPrecondition


class _Closable(Protocol):
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class LazyClient(Generic[C]):
    """Holds one client of type C for `owner` (named in errors)."""

    def __init__(self, owner: str, make: Callable[[], Awaitable[C]]) -> None:
        self._owner = owner
        self._make = make
        self._client: C | None = None
        self._lock = anyio.Lock()
        self._closed = False

    async def get(self, digest: str) -> C:
        """The client, made now if this is the first use; `digest` names the read in errors."""
        async with self._lock:
            if self._closed:
                raise FailedPrecondition(f"{self._owner} is closed: cannot read blob {digest}")
            if self._client is None:
                self._client = await self._make()
            return self._client

    async def aclose(self) -> None:
        """Close the client if one was made; later `get` calls fail (idempotent)."""
        async with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            await client.aclose()
