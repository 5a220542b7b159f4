"""OciLayoutBackend: ranges of blobs in a local OCI image layout (`blobs/<algo>/<hex>`).

Rules kept:

- Rule 1: each read opens the blob file, `os.pread`s exactly the range and closes it, in a worker
  thread (`anyio.to_thread.run_sync`), so the event loop never blocks on the disk. No descriptor is
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
from lazyfly.oci.layout import OciLayout


class OciLayoutBackend:
    """Reads blob ranges from the OCI layout directory at `layout_path`."""

    name = "local"

    def __init__(self, layout_path: Path | str) -> None:
        self.layout = OciLayout(Path(layout_path))
        self.stats = BackendStats()
        self._closed = False

    def __repr__(self) -> str:
        return f"OciLayoutBackend({str(self.layout.path)!r})"

    async def read_range(self, digest: str, offset: int, length: int, *, prefetch: bool = False) -> bytes:
        """Return `length` bytes of blob `digest` from `offset` (prefetch makes no difference here)."""
        check_range(digest, offset, length)
        if self._closed:
            raise FailedPrecondition(f"{self!r} is closed: cannot read blob {digest}")
        if length == 0:
            return b""
        return await counted(
            self.stats, lambda: anyio.to_thread.run_sync(self._pread, digest, offset, length)
        )

    def _pread(self, digest: str, offset: int, length: int) -> bytes:
        path = self.layout.blob_path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in OCI layout {self.layout.path}") from None
        try:
            size = os.fstat(fd).st_size
            if offset + length > size:
                raise past_end(digest, offset, length, size)
            parts: list[bytes] = []
            done = 0
            while done < length:
                part = os.pread(fd, length - done, offset + done)
                if not part:
                    raise Corrupt(f"{describe(digest, offset, length)}: {path} shrank while being read")
                parts.append(part)
                done += len(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        finally:
            os.close(fd)

    async def aclose(self) -> None:
        """Mark the backend closed (it holds no open files between reads)."""
        self._closed = True
