"""Which files of a build go to the image's prefetch blob: those its prefetch list names.

The fusefs daemon prefetches the listed files while a container starts. Left where the source
put them, they lie scattered across the layer blobs (a package's modules among the many it never
loads), and fetching them costs one range request per little group; gathered in one blob of
their own they come in a few large requests. A registry answers a request in a few milliseconds
of its CPU whatever its size, so at container start the number of requests, not the bytes, is
what the prefetch waits for.

Rules: a file is placed when its path in the image is a listed path or lies below one (a listed
directory means every file under it); paths are compared name by name, as the bootstrap's
prefetch table finds them (empty names from `//` or a trailing `/` ignored); symlinks are not
followed (a listed symlink places nothing: list the files the workload reads, as `lazyfly
accessed` writes them). A chunk goes where it is first stored: a listed file whose chunk an
earlier file already stored keeps that chunk where it is.
"""

from collections.abc import Iterable

_Parts = tuple[bytes, ...]


class PrefetchPlacement:
    """The set of listed paths, asked file by file while the sources are read."""

    def __init__(self, paths: Iterable[str]) -> None:
        self._paths = {_parts(path.encode("utf-8", "surrogateescape")) for path in paths}

    def __bool__(self) -> bool:
        return bool(self._paths)

    def holds(self, name: bytes) -> bool:
        """True if the file at image path `name` belongs in the prefetch blob."""
        parts = _parts(name)
        return any(parts[:depth] in self._paths for depth in range(len(parts), -1, -1))


def _parts(path: bytes) -> _Parts:
    return tuple(part for part in path.split(b"/") if part)
