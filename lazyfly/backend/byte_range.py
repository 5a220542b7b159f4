"""Byte ranges of blobs: argument checks and the HTTP `Range` / `Content-Range` codec the backends share.

A pure codec (stdlib only, no I/O). Rules kept:

- Rule 1: a read is `(digest, offset, length)` with a well-formed digest, `offset >= 0` and
  `length >= 0`; anything else is InvalidArgument naming the digest. A length of 0 asks for nothing:
  backends return b"" without I/O (so it cannot tell whether the blob exists).
- Rule 2: a range that runs past the end of an existing blob is NotFound (the bytes do not exist),
  the same category as a missing blob, naming the digest, the range and the blob's size.
- Rule 3: `Content-Range` is parsed strictly (`bytes FIRST-LAST/TOTAL`, TOTAL may be `*`); anything
  else is RemoteProtocolError, since it is the server that broke the protocol.
"""

import re

from lazyfly.errors import InvalidArgument, NotFound, RemoteProtocolError
from lazyfly.oci.reference import check_digest

_CONTENT_RANGE = re.compile(r"^bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)$")


def check_range(digest: str, offset: int, length: int) -> None:
    """Raise InvalidArgument unless `digest` is well formed and `offset`, `length` are not negative."""
    check_digest(digest)
    if offset < 0 or length < 0:
        raise InvalidArgument(f"bad range of blob {digest}: offset {offset}, length {length}")


def describe(digest: str, offset: int, length: int) -> str:
    """Name a range in messages: `bytes 10-19 of blob sha256:...`."""
    return f"bytes {offset}-{offset + length - 1} of blob {digest}"


def past_end(digest: str, offset: int, length: int, size: int) -> NotFound:
    """Return the error for a range that runs past the end of a blob of `size` bytes."""
    return NotFound(f"{describe(digest, offset, length)}: past the end of the blob ({size} bytes)")


def range_header(offset: int, length: int) -> str:
    """Return the `Range` header value asking for `length` (>= 1) bytes from `offset`."""
    return f"bytes={offset}-{offset + length - 1}"


def parse_content_range(value: str) -> tuple[int, int, int | None]:
    """Return (first, last, total or None) of a `Content-Range` value; raise RemoteProtocolError."""
    match = _CONTENT_RANGE.match(value.strip())
    if match is None:
        raise RemoteProtocolError(f"malformed Content-Range {value!r}")
    first, last = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if last < first or (total is not None and last >= total):
        raise RemoteProtocolError(f"impossible Content-Range {value!r}")
    return first, last, total
