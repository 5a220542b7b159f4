"""Tests of lazyfly.compression: per-chunk zstd / lz4 / none, raw storage when it does not pay."""

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lazyfly.compression import ZSTD_LEVEL, Compressor, compress, decompress
from lazyfly.errors import Corrupt, InvalidArgument

COMPRESSORS = [Compressor.ZSTD, Compressor.LZ4, Compressor.NONE]


def test_compressor_codes_are_the_ones_written_in_the_format() -> None:
    assert (Compressor.NONE, Compressor.ZSTD, Compressor.LZ4) == (0, 1, 2)
    assert ZSTD_LEVEL == 3


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_compressible_chunk_round_trips(compressor: Compressor) -> None:
    data = b"lazyfly chunk " * 4096
    stored, used = compress(data, compressor)
    assert used is compressor
    if compressor is not Compressor.NONE:
        assert len(stored) < len(data)
    assert decompress(stored, used, len(data)) == data


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=70_000) | st.binary(max_size=64).map(lambda b: b * 500),
    compressor=st.sampled_from(COMPRESSORS),
)
def test_any_bytes_round_trip_with_the_compressor_reported(data: bytes, compressor: Compressor) -> None:
    stored, used = compress(data, compressor)
    assert used in (compressor, Compressor.NONE)
    if used is Compressor.NONE:
        assert stored == data
    else:
        assert len(stored) < len(data)
    assert decompress(stored, used, len(data)) == data


@pytest.mark.parametrize("compressor", [Compressor.ZSTD, Compressor.LZ4])
def test_incompressible_chunk_is_stored_raw_and_flagged_none(compressor: Compressor) -> None:
    data = os.urandom(64 << 10)
    stored, used = compress(data, compressor)
    assert used is Compressor.NONE
    assert stored == data


@pytest.mark.parametrize("compressor", [Compressor.ZSTD, Compressor.LZ4])
def test_empty_chunk_is_stored_raw(compressor: Compressor) -> None:
    assert compress(b"", compressor) == (b"", Compressor.NONE)


@pytest.mark.parametrize("compressor", [Compressor.ZSTD, Compressor.LZ4])
def test_decompress_of_garbage_raises_corrupt(compressor: Compressor) -> None:
    with pytest.raises(Corrupt):
        decompress(b"this is not a compressed chunk at all", compressor, 4096)


@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize("delta", [-1, 1])
def test_decompress_to_the_wrong_size_raises_corrupt(compressor: Compressor, delta: int) -> None:
    data = b"0123456789abcdef" * 256
    stored, used = compress(data, compressor)
    assert used is compressor
    with pytest.raises(Corrupt):
        decompress(stored, used, len(data) + delta)


def test_damaged_zstd_frame_is_not_always_caught_so_readers_must_check_blake3() -> None:
    # zstd frames are written without their own checksum: a flipped literal byte inflates to
    # wrong bytes of the right size. Only the chunk's blake3 catches it (docs/format.md).
    data = b"0123456789abcdef" * 256
    stored, _ = compress(data, Compressor.ZSTD)
    outcomes = set()
    for i in range(len(stored)):
        damaged = bytearray(stored)
        damaged[i] ^= 0xFF
        try:
            outcomes.add(
                "same" if decompress(bytes(damaged), Compressor.ZSTD, len(data)) == data else "wrong"
            )
        except Corrupt:
            outcomes.add("corrupt")
    assert "corrupt" in outcomes and "wrong" in outcomes


def test_zstd_frame_declaring_a_huge_size_raises_corrupt_without_allocating_it() -> None:
    # magic, descriptor (8-byte content size, single segment), content size, last empty raw block
    frame = b"\x28\xb5\x2f\xfd" + b"\xe0" + struct.pack("<Q", 1 << 45) + b"\x01\x00\x00"
    with pytest.raises(Corrupt):
        decompress(frame, Compressor.ZSTD, 4096)


@pytest.mark.parametrize("name", ["zstd", "LZ4", "none"])
def test_from_name_accepts_known_names_in_any_case(name: str) -> None:
    assert Compressor.from_name(name).name == name.upper()


@pytest.mark.parametrize("name", ["gzip", "", "zstd:3"])
def test_from_name_of_unknown_compressor_raises_invalid_argument(name: str) -> None:
    with pytest.raises(InvalidArgument, match="unknown compressor"):
        Compressor.from_name(name)
