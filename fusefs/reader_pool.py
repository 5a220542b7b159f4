"""One BlobReader per blob for the whole daemon, shared by every image that uses the blob.

A blob's cache files are locked by the reader that has them open, and two images built on the
same base share layers, so readers are pooled by blob digest and reference-counted. Backends are
counted too: a reader keeps the backend it was opened with alive after the image that brought
that backend is removed. Rule: whoever acquires, releases exactly once.
"""

from dataclasses import dataclass
from pathlib import Path

from lazyfly.backend.base import BlobBackend
from lazyfly.format.layout import BlobInfo
from lazyfly.fusefs.blob_reader import BlobReader


@dataclass
class _Counted:
    thing: object
    users: int


class ReaderPool:
    """Blob readers by digest and the backends they read through, with user counts."""

    def __init__(self) -> None:
        self._readers: dict[str, _Counted] = {}
        self._backends: dict[int, _Counted] = {}

    def hold_backend(self, backend: BlobBackend) -> None:
        """Count one more user of `backend`."""
        entry = self._backends.setdefault(id(backend), _Counted(backend, 0))
        entry.users += 1

    async def release_backend(self, backend: BlobBackend) -> None:
        """Count one user less; the last one closes the backend."""
        entry = self._backends[id(backend)]
        entry.users -= 1
        if entry.users == 0:
            del self._backends[id(backend)]
            await backend.aclose()

    def acquire(self, cache_dir: Path, blob: BlobInfo, backend: BlobBackend, merge_limit: int) -> BlobReader:
        """The reader of `blob`, opened on first use with `backend`."""
        entry = self._readers.get(blob.digest)
        if entry is None:
            reader = BlobReader.open(cache_dir, blob, backend, merge_limit=merge_limit)
            self.hold_backend(backend)
            entry = self._readers[blob.digest] = _Counted(reader, 0)
        entry.users += 1
        reader = entry.thing
        assert isinstance(reader, BlobReader)
        return reader

    async def release(self, reader: BlobReader) -> None:
        """Count one user less of `reader`; the last one closes it and lets go of its backend."""
        entry = self._readers[reader.blob.digest]
        entry.users -= 1
        if entry.users == 0:
            del self._readers[reader.blob.digest]
            await reader.aclose()
            await self.release_backend(reader.backend)

    def readers(self) -> list[BlobReader]:
        """Every open reader (for metrics)."""
        return [entry.thing for entry in self._readers.values()]  # type: ignore[misc]
