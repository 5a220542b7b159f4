"""Verified chunks that read-ahead brought into memory for the reads that follow, under a byte budget.

A sequential reader through FUSE costs the daemon's one thread two copies per request: the pread
from the cache file and the reply to the kernel. Read-ahead (read_ahead.py) makes the first one
in a worker thread, a whole run at a time, and leaves the bytes here; the reads that follow are
then answered with views of them, and the event loop only writes the reply.

Rules:
- Only verified bytes enter: chunks a BlobReader just fetched and checked, or chunks read back
  from the cache file after their ready bit was seen. Images never change, so an entry is never
  stale; it is only dropped.
- An entry is dropped once a read has been served up to its end (a sequential reader does not
  come back), or when the budget is exceeded, least recently used first; a chunk larger than the
  whole budget is not kept.
- Keys are (blob index, uncompressed offset) within one image. Pure bookkeeping: no I/O, no trio.
"""

from collections import OrderedDict

from lazyfly.fusefs.blob_reader import Chunk

Key = tuple[int, int]  # blob index, uncompressed offset


class RecentChunks:
    """Chunks in memory by (blob index, uncompressed offset), at most `budget` bytes in all."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.bytes = 0
        self.hits = 0  # reads answered from here
        self._chunks: OrderedDict[Key, Chunk] = OrderedDict()

    def __len__(self) -> int:
        return len(self._chunks)

    def __contains__(self, key: Key) -> bool:
        return key in self._chunks

    def put(self, key: Key, chunk: Chunk) -> None:
        """Keep `chunk` (replacing what `key` held), dropping the least recently used over budget."""
        if len(chunk) > self.budget:
            return
        self.drop(key)
        self._chunks[key] = chunk
        self.bytes += len(chunk)
        while self.bytes > self.budget:
            _, old = self._chunks.popitem(last=False)
            self.bytes -= len(old)

    def get(self, key: Key) -> Chunk | None:
        """The chunk kept for `key`, if any (and mark it recently used)."""
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
        return chunk

    def drop(self, key: Key) -> None:
        """Forget `key` (a read has gone past its end)."""
        chunk = self._chunks.pop(key, None)
        if chunk is not None:
            self.bytes -= len(chunk)
