"""Which chunks of a build go to the image's prefetch blob: those its prefetch list asks for.

The fusefs daemon prefetches the listed files while a container starts. Left where the source
put them, they lie scattered across the layer blobs (a package's modules among the many it never
loads), and fetching them costs one range request per little group; gathered in one blob of
their own they come in a few large requests. A registry answers a request in a few milliseconds
of its CPU whatever its size, so at container start the number of requests, not the bytes, is
what the prefetch waits for. A file listed with byte ranges (a mapped library of which a program
touches a few pages) places only the chunks those ranges touch, so the prefetch fetches no more
of it than the recorded workload read.

Rules: a file is placed when its path in the image is a listed path or lies below one (a listed
directory means every file below it); paths are compared name by name, as the bootstrap's
prefetch table finds them (empty names from `//` or a trailing `/` ignored); symlinks are not
followed (list the files the workload reads, as `lazyfly accessed` writes them). Every chunk the
list asks for is in the prefetch blob, even one an earlier file or the chunk dictionary stored
elsewhere (it is stored again there, once: chunker.py), so that fetching the prefetch blob's
chunks is fetching the list.
"""

from collections.abc import Iterable

from lazyfly.prefetch_list import PrefetchEntry

_Parts = tuple[bytes, ...]


class PrefetchPlacement:
    """The prefetch list's entries by path, asked chunk by chunk while the sources are read."""

    def __init__(self, entries: Iterable[PrefetchEntry]) -> None:
        self._entries: dict[_Parts, list[PrefetchEntry]] = {}
        for entry in entries:
            self._entries.setdefault(_parts(entry.path.encode("utf-8", "surrogateescape")), []).append(entry)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def entries_for(self, name: bytes) -> list[PrefetchEntry]:
        """The entries that name the file at image path `name` or a directory above it."""
        parts = _parts(name)
        found: list[PrefetchEntry] = []
        for depth in range(len(parts), -1, -1):
            found += self._entries.get(parts[:depth], ())
        return found


def wanted(entries: list[PrefetchEntry], offset: int, length: int) -> bool:
    """True if one of `entries` asks for a byte of the chunk [offset, offset + length)."""
    return any(entry.covers(offset, length) for entry in entries)


def _parts(path: bytes) -> _Parts:
    return tuple(part for part in path.split(b"/") if part)
