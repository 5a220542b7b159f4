"""Piece checksums as Dragonfly writes them: `crc32c:<decimal>` (ours) and `crc32:<decimal>` (IEEE, what
current reference peers send). Pure; google-crc32c and zlib release the GIL on big buffers.
"""

import zlib

import google_crc32c

from lazyfly.errors import Corrupt, InvalidArgument


def crc32c_digest(data: bytes | memoryview) -> str:
    """The `crc32c:<decimal>` digest of `data`."""
    return f"crc32c:{google_crc32c.value(bytes(data))}"


def compute(algorithm: str, data: bytes | memoryview) -> int:
    """The checksum of `data` with `algorithm` (crc32c or crc32)."""
    if algorithm == "crc32c":
        return int(google_crc32c.value(bytes(data)))
    if algorithm == "crc32":
        return zlib.crc32(data)
    raise InvalidArgument(f"piece digest algorithm {algorithm!r}: expected crc32c or crc32")


def parse(digest: str) -> tuple[str, int]:
    """(algorithm, value) of `crc32c:<decimal>` or `crc32:<decimal>`; InvalidArgument otherwise."""
    algorithm, sep, value = digest.partition(":")
    if not sep or algorithm not in ("crc32c", "crc32") or not value.isdigit() or int(value) >= 1 << 32:
        raise InvalidArgument(f"piece digest {digest!r}: expected crc32c:<decimal> or crc32:<decimal>")
    return algorithm, int(value)


def verify(digest: str, data: bytes | memoryview, what: str) -> None:
    """Raise Corrupt naming `what` unless `data` has `digest`."""
    algorithm, expected = parse(digest)
    actual = compute(algorithm, data)
    if actual != expected:
        raise Corrupt(f"{what}: {algorithm} is {actual}, the sender said {expected}")
