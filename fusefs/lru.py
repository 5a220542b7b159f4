"""A mapping that keeps at most `limit` entries, dropping the least recently used first.

The daemon's per-image caches of decoded metadata and per-file read-ahead windows are bounded
this way. Pure bookkeeping: no I/O, no trio, not thread-safe (the event loop owns it).
"""

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most `limit` entries; `get` and `put` make an entry the most recently used."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The value of `key`, or None."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        """Keep `value` under `key`, dropping the least recently used entry over the limit; return it."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self.limit:
            self._entries.popitem(last=False)
        return value
