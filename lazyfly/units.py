"""Human sizes: parse `1MiB`, `512k`, `4096` into bytes and print bytes back for people."""

import re

from lazyfly.errors import InvalidArgument

_SUFFIXES = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1000**3,
    "gib": 1 << 30,
}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Return the number of bytes that `text` names; raise InvalidArgument when it names none."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _SUFFIXES:
        raise InvalidArgument(f"not a size: {text!r} (use e.g. 4096, 64KiB, 1MiB)")
    return int(match.group(1)) * _SUFFIXES[match.group(2).lower()]


def format_size(n: float) -> str:
    """Return `n` bytes as a short binary-unit string, e.g. `1.5 MiB`."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
