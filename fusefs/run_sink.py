"""RunSink: verifies and stores the chunks of one backend run as their bytes arrive.

A BlobReader fetches a run of chunks with one `read_range_into` (lazyfly/range_sink.py); the
backend hands this sink the run piece by piece in a worker thread: each chunk's stored bytes, and
the bytes between chunks (a merged gap) that nobody asked for. Each chunk is checked and written
while its bytes are still in the CPU's cache, in the thread that received them.

Rules:
- Rule 1 (verify, then store): a chunk is inflated (unless stored raw) and its blake3 compared
  with its ref before it is written to the cache; a chunk that fails is an `Corrupt` outcome naming
  the blob and uncompressed offset, and nothing is written. Marking chunks ready is not the sink's
  job: the reader does it on the event loop (blob_reader.py, Rule 5).
- Rule 2 (outcomes): `outcomes` has one entry per chunk of the run, in the run's order, once a
  delivery completed: the chunk's verified bytes and the CacheFull that kept them out of the cache
  (None when they were stored), or the Corrupt that rejects them. The bytes of a stored raw chunk
  are a view of the cache file's mapping (no copy); of a raw chunk that did not fit, a copy (the
  piece itself is borrowed); of a compressed chunk, what inflating it made.
- Rule 3 (announcing): with an `announce` callback, each chunk's outcome is also handed to it as
  soon as it is known, with the chunk's index in the run, in the worker thread (the reader
  forwards it to its event loop). A retried delivery announces its chunks again.
- Rule 4 (closing): a cancelled reader may leave a backend's worker thread delivering; `close`
  waits for the chunk being taken and makes every later `take` raise, so once it returns nothing
  more is written to the cache (which its owner may close next).
- Rule 5 (layout): the run's refs come sorted by compressed offset and do not overlap (plan_runs
  keeps overlapping refs in separate runs); anything else is a caller's bug, refused at once.
"""

import threading
from collections.abc import Callable, Sequence

from lazyfly.compression import Compressor, decompress
from lazyfly.digest import blake3_digest
from lazyfly.errors import Corrupt, FailedPrecondition
from lazyfly.format.layout import BlobInfo, ChunkRef
from lazyfly.fusefs.chunk_cache import CacheFull, ChunkCache

Chunk = bytes | memoryview  # a chunk's verified bytes
# What became of one chunk (Rule 2).
Outcome = tuple[Chunk, CacheFull | None] | Corrupt


class RunSink:
    """The RangeSink of one run of `refs` of `blob`, whose bytes start at compressed offset `start`."""

    def __init__(
        self,
        blob: BlobInfo,
        cache: ChunkCache,
        refs: Sequence[ChunkRef],
        start: int,
        announce: Callable[[int, Outcome], None] | None = None,
    ) -> None:
        self.blob = blob
        self.cache = cache
        self.announce = announce
        self.piece_sizes: list[int] = []
        self._pieces: list[ChunkRef | None] = []  # the chunk each piece holds; None: a gap
        at = start
        for ref in refs:
            if ref.compressed_offset < at:
                raise ValueError(f"run of blob {blob.digest}: chunk refs overlap or are unsorted at {at}")
            if ref.compressed_offset > at:
                self.piece_sizes.append(ref.compressed_offset - at)
                self._pieces.append(None)
            self.piece_sizes.append(ref.compressed_size)
            self._pieces.append(ref)
            at = ref.compressed_offset + ref.compressed_size
        self.buffer = bytearray(max(self.piece_sizes, default=0))
        self.outcomes: list[Outcome] = []
        self._next = 0
        self._lock = threading.Lock()
        self._closed = False

    def restart(self) -> None:
        """A delivery starts over: forget what an earlier attempt delivered."""
        with self._lock:
            self._check_open()
            self.outcomes = []
            self._next = 0

    def take(self, piece: memoryview) -> None:
        """Verify and store the chunk this piece holds (Rule 1); skip a gap."""
        with self._lock:
            self._check_open()
            ref = self._pieces[self._next]
            self._next += 1
            if ref is not None:
                outcome = self._verify_and_store(ref, piece)
                self.outcomes.append(outcome)
                if self.announce is not None:
                    self.announce(len(self.outcomes) - 1, outcome)

    def close(self) -> None:
        """No `take` runs after this returns (Rule 4)."""
        with self._lock:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"the fetch of a run of blob {self.blob.digest} was given up")

    def _verify_and_store(self, ref: ChunkRef, raw: memoryview) -> Outcome:
        where = f"blob {self.blob.digest}: chunk at uncompressed offset {ref.uncompressed_offset}"
        try:
            if ref.compressor is Compressor.NONE:
                if len(raw) != ref.uncompressed_size:
                    raise Corrupt(f"stored {len(raw)} bytes, expected {ref.uncompressed_size}")
                chunk: Chunk = raw
            else:
                chunk = decompress(raw, ref.compressor, ref.uncompressed_size)
        except Corrupt as exc:
            return Corrupt(f"{where}: {exc}")
        if blake3_digest(chunk) != ref.digest:
            return Corrupt(f"{where}: blake3 does not match the chunk ref")
        try:
            self.cache.write(ref.uncompressed_offset, chunk)
        except CacheFull as exc:
            return (bytes(chunk) if chunk is raw else chunk), exc
        if chunk is raw:
            return self.cache.mapped(ref.uncompressed_offset, ref.uncompressed_size), None
        return chunk, None
