"""The CPU work on one chunk (blake3, zero test, compression), done by the chunker's workers.

Rules: a chunk whose digest equals the digest of zeros of its length is a
hole (no bytes kept); a chunk whose digest the caller already knows is not compressed; nothing
here keeps state besides the cache of zero digests.
"""

import os
from collections.abc import Container
from dataclasses import dataclass
from functools import cache

from lazyfly.builder.errors import SourceError
from lazyfly.compression import Compressor, compress
from lazyfly.digest import blake3_digest

FileRange = tuple[bytes, int, int]  # path, offset, length


@dataclass(slots=True)
class Prepared:
    """A chunk after the CPU work: its digest and, unless it is a hole or known, stored bytes."""

    size: int
    digest: bytes
    hole: bool
    stored: bytes | None
    compressor: Compressor


@cache
def _zero_digest(size: int) -> bytes:
    return blake3_digest(bytes(size))


def prepare(data: bytes, compressor: Compressor, known: Container[bytes] = ()) -> Prepared:
    """Hash `data`, and compress it unless it is all zeros or its digest is in `known`."""
    digest = blake3_digest(data)
    if digest == _zero_digest(len(data)):
        return Prepared(len(data), digest, True, None, Compressor.NONE)
    if digest in known:
        return Prepared(len(data), digest, False, None, Compressor.NONE)
    stored, used = compress(data, compressor)
    return Prepared(len(data), digest, False, stored, used)


def prepare_buffers(datas: list[bytes], compressor: Compressor, known: Container[bytes]) -> list[Prepared]:
    """Prepare chunks already in memory."""
    return [prepare(data, compressor, known) for data in datas]


def prepare_file_ranges(ranges: list[FileRange], compressor: Compressor) -> list[Prepared]:
    """Read and prepare chunks straight from files."""
    return [prepare(read_range(*r), compressor) for r in ranges]


def read_range(path: bytes, offset: int, length: int) -> bytes:
    """Return `length` bytes of the file at `path` from `offset`, or raise SourceError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SourceError(f"cannot read {os.fsdecode(path)}: {exc.strerror}") from exc
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    if len(data) != length:
        raise SourceError(f"{os.fsdecode(path)} changed size while being read")
    return data
