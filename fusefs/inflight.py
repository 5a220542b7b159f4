"""Single-flight on trio: concurrent requests for one key share one fetch.

Design (waiter takeover, no background nursery): the task that claims a key runs the fetch itself,
inside its own cancel scopes, so the caller's timeouts bound its own work (STYLE.md §7) and no task
outlives the read that started it. Everyone else waits on the key's Flight.

Rules:
- Rule 1: at most one Flight per key exists; `try_claim` returns a new one only when none runs.
  The owner settles it exactly once: `set_result`, `set_error` or `abandon` (extra calls are no-ops,
  so `abandon` in a `finally` is always safe). Settling removes the key first, then wakes waiters.
- Rule 2 (failure): `set_error` wakes every waiter, and each raises its own copy of the error (one
  exception object raised in many tasks would collect their tracebacks); the key is free again,
  so the next call fetches again.
- Rule 3 (cancellation): if the owner is cancelled (or dies of any BaseException) the flight is
  abandoned: waiters wake with Abandoned and retry, so one of them claims the key and fetches.
  A waiter's own cancellation only ends its own wait.
- Rule 4 (age): a Flight records `trio.current_time()` when claimed; flights are kept in claim
  order, so the oldest is the first, which fusefs exports to spot hung requests.
- Abandoned never escapes `run`; users of the lower-level `try_claim`/`wait` must catch it.
"""

import copy
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Abandoned(Exception):
    """The owner of a flight gave up before settling it; the waiter should try to claim the key."""


class Flight(Generic[K, T]):
    """One running fetch of `key`: its owner settles it, anyone may wait for it."""

    def __init__(self, table: "InFlight[K, T]", key: K) -> None:
        self.key = key
        self.started = trio.current_time()
        self._table = table
        self._done = trio.Event()
        self._value: T | None = None
        self._error: Exception | None = None
        self._abandoned = False

    @property
    def settled(self) -> bool:
        """True once the owner set a result or an error, or abandoned the flight."""
        return self._done.is_set()

    def set_result(self, value: T) -> None:
        """Hand `value` to every waiter."""
        if not self.settled:
            self._value = value
            self._settle()

    def set_error(self, error: Exception) -> None:
        """Make every waiter raise (a copy of) `error`."""
        if not self.settled:
            self._error = error
            self._settle()

    def abandon(self) -> None:
        """Give up without an outcome: waiters retry and one of them fetches."""
        if not self.settled:
            self._abandoned = True
            self._settle()

    def _settle(self) -> None:
        self._table._release(self)
        self._done.set()

    async def wait(self) -> T:
        """Wait for the outcome; raise the owner's error, or Abandoned if the owner gave up."""
        await self._done.wait()
        if self._abandoned:
            raise Abandoned(f"the fetch of {self.key!r} was abandoned")
        if self._error is not None:
            raise _own_copy(self._error) from self._error
        return self._value  # type: ignore[return-value]  # set whenever neither flag is


class InFlight(Generic[K, T]):
    """The running fetches of one owner (e.g. one blob's chunks), keyed by `K`."""

    def __init__(self) -> None:
        self._flights: dict[K, Flight[K, T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: K) -> bool:
        return key in self._flights

    def get(self, key: K) -> Flight[K, T] | None:
        """Return the running flight of `key`, if any."""
        return self._flights.get(key)

    def try_claim(self, key: K) -> Flight[K, T] | None:
        """Start a flight of `key` owned by the caller, or return None if one is running (Rule 1)."""
        if key in self._flights:
            return None
        flight: Flight[K, T] = Flight(self, key)
        self._flights[key] = flight
        return flight

    def oldest_start(self) -> float | None:
        """Return the trio clock time at which the oldest running flight started (Rule 4)."""
        for flight in self._flights.values():
            return flight.started
        return None

    def _release(self, flight: Flight[K, T]) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]

    async def run(self, key: K, fetch: Callable[[], Awaitable[T]]) -> T:
        """Return the result of `fetch()` for `key`, shared with every concurrent caller of `key`."""
        while True:
            flight = self.try_claim(key)
            if flight is None:
                running = self._flights[key]
                try:
                    return await running.wait()
                except Abandoned:
                    continue  # Rule 3: the owner was cancelled; claim the key ourselves
            try:
                value = await fetch()
            except Exception as exc:
                flight.set_error(exc)
                raise
            except BaseException:
                flight.abandon()
                raise
            flight.set_result(value)
            return value


def _own_copy(error: Exception) -> Exception:
    """Return a fresh exception equal to `error` for one waiter to raise (Rule 2)."""
    try:
        clone = copy.copy(error)
    except Exception:
        return error  # an exception type that cannot be rebuilt from its args: share it
    clone.__traceback__ = None
    return clone
