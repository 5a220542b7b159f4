"""Per-chunk compression: zstd (default), lz4 block, or none.

Rule: a chunk is stored compressed only when that saves bytes; otherwise it is stored raw and
flagged `NONE`, so a reader never inflates incompressible data. zstd contexts are not thread-safe,
so each thread keeps its own.
"""

import enum
import threading

import lz4.block
import zstandard

from lazyfly.errors import Corrupt, InvalidArgument

ZSTD_LEVEL = 3


class Compressor(enum.IntEnum):
    """How a chunk's bytes are stored in its blob; the value is written in the format."""

    NONE = 0
    ZSTD = 1
    LZ4 = 2

    @classmethod
    def from_name(cls, name: str) -> "Compressor":
        """Return the compressor named `zstd`, `lz4` or `none`."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise InvalidArgument(f"unknown compressor {name!r} (zstd, lz4, none)") from None


_local = threading.local()


def _zstd_compressor() -> zstandard.ZstdCompressor:
    if not hasattr(_local, "zc"):
        _local.zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        _local.zd = zstandard.ZstdDecompressor()
    return _local.zc


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    _zstd_compressor()
    return _local.zd


def compress(data: bytes, compressor: Compressor) -> tuple[bytes, Compressor]:
    """Compress `data`; return the stored bytes and the compressor actually used."""
    if compressor is Compressor.ZSTD:
        packed = _zstd_compressor().compress(data)
    elif compressor is Compressor.LZ4:
        packed = lz4.block.compress(data, store_size=False)
    else:
        return data, Compressor.NONE
    if len(packed) >= len(data):
        return data, Compressor.NONE
    return packed, compressor


def decompress(data: bytes, compressor: Compressor, size: int) -> bytes:
    """Inflate one stored chunk to exactly `size` bytes; raise Corrupt on any failure."""
    try:
        if compressor is Compressor.ZSTD:
            # A frame that declares its size is inflated to that size whatever max_output_size
            # says: refuse a lie before it allocates.
            declared = zstandard.frame_content_size(data)
            if declared not in (size, zstandard.CONTENTSIZE_UNKNOWN):
                raise Corrupt(f"zstd frame declares {declared} bytes, expected {size}")
            out = _zstd_decompressor().decompress(data, max_output_size=size)
        elif compressor is Compressor.LZ4:
            out = lz4.block.decompress(data, uncompressed_size=size)
        elif compressor is Compressor.NONE:
            out = bytes(data)
        else:
            raise Corrupt(f"unknown compressor code {compressor}")
    except (zstandard.ZstdError, lz4.block.LZ4BlockError) as exc:
        raise Corrupt(f"chunk does not decompress with {compressor.name.lower()}: {exc}") from exc
    if len(out) != size:
        raise Corrupt(f"chunk inflates to {len(out)} bytes, expected {size}")
    return out
