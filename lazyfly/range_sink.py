"""RangeSink: where a backend delivers a range piece by piece, as the bytes arrive.

A reader that verifies and stores what it fetches (fusefs) wants each chunk of a range as soon as
its bytes are in, not the whole range in one new buffer: a 30 MiB answer in a fresh `bytes` costs
the daemon a page fault per 4 KiB and passes through the CPU caches three times (received, hashed,
written). Delivered into one reused buffer a chunk at a time, each chunk is hashed and written
while it is still in cache: 16 % less daemon CPU per GiB of cold reads (five alternating pairs).

Rules every producer keeps (`BlobBackend.read_range_into` and `feed`):
- Rule 1 (order): a delivery starts with `restart()`, then calls `take` once per size of
  `piece_sizes`, in order, each time with exactly that many bytes. A retried delivery starts again
  with `restart()`, so a sink never sees half of an earlier attempt as if it were whole.
- Rule 2 (borrowed bytes): the piece handed to `take` is valid only during the call (producers
  reuse `buffer`); a sink keeps what it needs by copying or storing it.
- Rule 3 (threads): `take` runs in a worker thread, never on the event loop, so it may block (hash,
  write a file). A sink that raises aborts the delivery, and its error reaches the caller.
"""

from collections.abc import Sequence
from typing import Protocol

# An httpx request carries its sink in this extension; a transport that delivered the body into
# it (threaded_transport.py) sets the response extension of the same name to True, and the body
# it returns is empty.
SINK_EXTENSION = "lazyfly.range_sink"


class RangeSink(Protocol):
    """Takes the bytes of one range, piece by piece (module rules)."""

    piece_sizes: Sequence[int]  # the range's pieces in order; they add up to its length
    buffer: bytearray  # at least max(piece_sizes) bytes: producers may receive pieces into it

    def restart(self) -> None:
        """A delivery (or a retry of one) starts from the first piece."""
        ...

    def take(self, piece: memoryview) -> None:
        """The next piece, whole; valid only during the call."""
        ...


class WholeRange:
    """A RangeSink that takes a range as one piece and keeps it in `buffer`."""

    def __init__(self, length: int) -> None:
        self.piece_sizes = [length] if length else []
        self.buffer = bytearray(length)

    def restart(self) -> None:
        """Nothing to forget: the one piece is written over whole."""

    def take(self, piece: memoryview) -> None:
        """Keep the piece (a producer that received it into `buffer` already did)."""
        if piece.obj is not self.buffer:
            self.buffer[:] = piece


def range_length(sink: RangeSink) -> int:
    """The length of the range `sink` takes."""
    return sum(sink.piece_sizes)


def feed(sink: RangeSink, data: bytes | memoryview) -> None:
    """Deliver a range read whole into `sink` (Rule 1), for backends that cannot stream it."""
    if len(data) != range_length(sink):
        raise ValueError(f"{len(data)} bytes for a sink of {range_length(sink)}")
    view = memoryview(data)
    sink.restart()
    at = 0
    for size in sink.piece_sizes:
        sink.take(view[at : at + size])
        at += size
