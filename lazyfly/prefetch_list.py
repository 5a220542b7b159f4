"""The prefetch list: what `lazyfly accessed` writes and `lazyfly build/convert --prefetch-list` reads.

One entry per line: an absolute path, alone for the whole file (a directory: every file below
it), or followed by a tab and the byte ranges read, `OFFSET:LENGTH` separated by commas, for a
file read only in parts (a shared library a program maps, of which it touches a few pages).
Blank lines and lines starting with `#` are ignored. Pure functions, no I/O.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from lazyfly.errors import InvalidArgument

Range = tuple[int, int]  # (offset, length) in bytes


@dataclass(frozen=True)
class PrefetchEntry:
    """A path to prefetch: all of it (`ranges` None) or those byte ranges of the file."""

    path: str
    ranges: tuple[Range, ...] | None = None

    def covers(self, offset: int, length: int) -> bool:
        """True if the entry asks for any byte of [offset, offset + length)."""
        if self.ranges is None:
            return True
        return any(start < offset + length and offset < start + size for start, size in self.ranges)


def parse_prefetch_list(text: str, where: str) -> list[PrefetchEntry]:
    """The entries of a prefetch list; InvalidArgument naming `where` and the line if one is bad."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        path, tab, spans = line.partition("\t")
        path = path.strip()
        if not path.startswith("/"):
            raise InvalidArgument(f"{where}:{number}: prefetch paths must be absolute, got {path!r}")
        entries.append(PrefetchEntry(path, _ranges(spans, f"{where}:{number}") if tab else None))
    return entries


def format_prefetch_list(entries: Iterable[PrefetchEntry]) -> str:
    """The text of a prefetch list holding `entries`, one line each."""
    lines = []
    for entry in entries:
        if entry.ranges is None:
            lines.append(f"{entry.path}\n")
        else:
            spans = ",".join(f"{offset}:{length}" for offset, length in entry.ranges)
            lines.append(f"{entry.path}\t{spans}\n")
    return "".join(lines)


def _ranges(text: str, where: str) -> tuple[Range, ...]:
    out = []
    for span in text.split(","):
        offset, colon, length = span.strip().partition(":")
        if not (colon and offset.isdigit() and length.isdigit() and int(length) > 0):
            raise InvalidArgument(f"{where}: byte range {span!r} is not OFFSET:LENGTH with LENGTH > 0")
        out.append((int(offset), int(length)))
    return tuple(out)
