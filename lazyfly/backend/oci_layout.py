"""OciLayoutBackend: ranges of blobs in a local OCI image layout (`blobs/<algo>/<hex>`).

Rules kept:

- Rule 1: each read opens the blob file, preads each piece of the range into the sink's buffer and
  hands it over before reading the next, and closes the file, in a worker thread
  (`anyio.to_thread.run_sync`), so the event loop never blocks on the disk. No descriptor is
  cached, so `aclose` can never close a file under a running read.
- Rule 2: a missing blob is NotFound naming the digest and the layout; a range running past the end
  of the blob is NotFound as well (see byte_range Rule 2), decided from the file size before reading,
  so a read never returns short; a file that shrinks mid-read is Corrupt.
- Rule 3: bytes are not verified here: blobs are verified per chunk by their readers (fusefs), and a
  range cannot be checked against the digest of the whole blob.

A local disk does not stall the way a network does, so reads have no retries and no timeout; a read
after `aclose` is FailedPrecondition.
"""

import os
from pathlib import Path

import anyio

from lazyfly.backend.byte_range import check_range, describe, past_end
from lazyfly.backend.stats import BackendStats, counted
from lazyfly.errors import Corrupt, FailedPrecondition, NotFound
from lazyfly.files import pread_into
from lazyfly.oci.layout import OciLayout
from lazyfly.range_sink import RangeSink, range_length


class OciLayoutBackend:
    """Reads blob ranges from the OCI layout directory at `layout_path`."""

    name = "local"

    def __init__(self, layout_path: Path | str) -> None:
        self.layout = OciLayout(Path(layout_path))
        self.stats = BackendStats()
        self._closed = False

    def __repr__(self) -> str:
        return f"OciLayoutBackend({str(self.layout.path)!r})"

    async def read_range_into(
        self, digest: str, offset: int, sink: RangeSink, *, prefetch: bool = False
    ) -> None:
        """Deliver the bytes of blob `digest` from `offset` into `sink`, a piece at a time (Rule 1);
        prefetch makes no difference here."""
        length = range_length(sink)
        check_range(digest, offset, length)
        if self._closed:
            raise FailedPrecondition(f"{self!r} is closed: cannot read blob {digest}")
        if length == 0:
            return
        await counted(
            self.stats,
            lambda: anyio.to_thread.run_sync(self._pread_into, digest, offset, length, sink),
            length,
        )

    def _pread_into(self, digest: str, offset: int, length: int, sink: RangeSink) -> None:
        fd = self._open(digest, offset, length)
        try:
            buffer = memoryview(sink.buffer)
            sink.restart()
            at = offset
            for size in sink.piece_sizes:
                if pread_into(fd, buffer[:size], at) < size:
                    path = self.layout.blob_path(digest)
                    raise Corrupt(f"{describe(digest, offset, length)}: {path} shrank while being read")
                sink.take(buffer[:size])
                at += size
        finally:
            os.close(fd)

    def _open(self, digest: str, offset: int, length: int) -> int:
        """The blob's file, open for reading, once it is known to hold the range (Rule 2)."""
        try:
            fd = os.open(self.layout.blob_path(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in OCI layout {self.layout.path}") from None
        size = os.fstat(fd).st_size
        if offset + length > size:
            os.close(fd)
            raise past_end(digest, offset, length, size)
        return fd

    async def aclose(self) -> None:
        """Mark the backend closed (it holds no open files between reads)."""
        self._closed = True
