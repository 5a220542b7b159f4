"""The BlobBackend protocol: read a byte range of a data blob, wherever the blob lives.

Rules every implementation keeps (tests/suites/backend_suite.py checks them on each):
- `read_range_into` delivers exactly the sink's length of bytes from `offset` into a RangeSink
  (lazyfly/range_sink.py), piece by piece as they arrive where the backend can (one reused
  buffer, no answer assembled), or raises; it never delivers short. `read_range` (below, the same
  for every backend) returns a range whole;
- a blob that does not exist, or a range past its end, raises lazyfly.errors.NotFound naming the
  digest (and the range); a length of 0 delivers nothing without I/O; a negative offset or length
  or a malformed digest raises InvalidArgument; a read after `aclose` raises FailedPrecondition;
- a backend that cannot answer raises lazyfly.errors.Unavailable after its bounded retries,
  never hangs: each attempt has a timeout;
- `prefetch=True` marks background reads: they retry less and, where the transport allows,
  yield to on-demand reads;
- backends hold connections; `aclose` releases them.
"""

from typing import Protocol

from lazyfly.backend.byte_range import check_range
from lazyfly.backend.stats import BackendStats
from lazyfly.range_sink import RangeSink, WholeRange


class BlobBackend(Protocol):
    """Reads ranges of data blobs by digest."""

    name: str  # "local", "registry" or "proxy": the label of its metrics
    stats: BackendStats

    async def read_range_into(
        self, digest: str, offset: int, sink: RangeSink, *, prefetch: bool = False
    ) -> None:
        """Deliver the bytes of blob `digest` from `offset` into `sink`, as many as it takes."""
        ...

    async def aclose(self) -> None:
        """Release connections and files."""
        ...


async def read_range(
    backend: BlobBackend, digest: str, offset: int, length: int, *, prefetch: bool = False
) -> bytearray:
    """The `length` bytes of blob `digest` from `offset`, whole, for callers that want one buffer."""
    check_range(digest, offset, length)
    whole = WholeRange(length)
    await backend.read_range_into(digest, offset, whole, prefetch=prefetch)
    return whole.buffer
