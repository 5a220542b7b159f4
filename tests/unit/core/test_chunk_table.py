"""Tests of lazyfly.format.chunk_table: the data blob's tail table, its codec and its lookup."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lazyfly.compression import Compressor
from lazyfly.digest import blake3_digest
from lazyfly.errors import LocalProtocolError, RemoteProtocolError
from lazyfly.format.chunk_table import TAIL_SIZE, ChunkTable, decode_table, decode_tail, encode_table
from lazyfly.format.layout import BLOB_MAGIC, BLOB_TAIL, BLOB_VERSION, CHUNK_ENTRY, ChunkEntry

DIGEST = bytes(range(32))


def _entry(
    uoff: int, usize: int, coff: int = 0, csize: int = 1, comp: Compressor = Compressor.ZSTD
) -> ChunkEntry:
    return ChunkEntry(uoff, coff, usize, csize, comp, DIGEST)


def _blob(entries: list[ChunkEntry], table_offset: int) -> bytes:
    return b"\xaa" * table_offset + encode_table(entries, table_offset)


def _decode(blob: bytes) -> ChunkTable:
    tail = decode_tail(blob[-TAIL_SIZE:], len(blob))
    return decode_table(blob[tail.table_offset : len(blob) - TAIL_SIZE], tail)


def _raw_blob(rows: list[tuple], table_offset: int, usize: int, version: int = BLOB_VERSION) -> bytes:
    """A blob whose table is packed as given (no ordering checks) with a correct digest."""
    table = b"".join(CHUNK_ENTRY.pack(*row) for row in rows)
    tail = BLOB_TAIL.pack(BLOB_MAGIC, version, 0, len(rows), table_offset, usize, blake3_digest(table))
    return b"\0" * table_offset + table + tail


@st.composite
def _entries(draw: st.DrawFn) -> tuple[list[ChunkEntry], int]:
    """Entries sorted by uncompressed offset, 4 KiB aligned (gaps allowed), and the table offset."""
    n = draw(st.integers(0, 40))
    entries, uoff, coff = [], 0, 0
    for _ in range(n):
        uoff += 4096 * draw(st.integers(0, 3) | st.integers(0, 1 << 28))
        usize = draw(st.integers(1, 16 << 20))
        csize = draw(st.integers(0, usize))
        coff += draw(st.integers(0, 100))
        comp = draw(st.sampled_from(list(Compressor)))
        entries.append(ChunkEntry(uoff, coff, usize, csize, comp, draw(st.binary(min_size=32, max_size=32))))
        uoff += -(-usize // 4096) * 4096
        coff += csize
    return entries, coff + draw(st.integers(0, 1000))


def test_tail_and_entry_are_64_bytes() -> None:
    assert TAIL_SIZE == 64 and CHUNK_ENTRY.size == 64


@settings(max_examples=200, deadline=None)
@given(_entries())
def test_encoded_table_decodes_to_the_same_entries(case: tuple[list[ChunkEntry], int]) -> None:
    entries, table_offset = case
    blob = _blob(entries, table_offset)
    assert len(blob) == table_offset + 64 * len(entries) + 64
    tail = decode_tail(blob[-TAIL_SIZE:], len(blob))
    assert tail.chunk_count == len(entries) and tail.table_offset == table_offset
    assert tail.uncompressed_size == (
        entries[-1].uncompressed_offset + entries[-1].uncompressed_size if entries else 0
    )
    table = decode_table(blob[table_offset:-TAIL_SIZE], tail)
    assert table.entries == entries
    assert all(type(e.compressor) is Compressor for e in table.entries)
    for e in entries:
        assert table.find(e.uncompressed_offset) == e
        assert table.find(e.uncompressed_offset + e.uncompressed_size - 1) == e


def test_tail_fields_sit_at_their_documented_offsets() -> None:
    blob = _blob([_entry(0, 10, coff=0, csize=7)], 7)
    tail = blob[-64:]
    assert tail[0:8] == b"LZFYBLOB"
    assert int.from_bytes(tail[8:10], "little") == 1  # version
    assert int.from_bytes(tail[10:12], "little") == 0  # flags
    assert int.from_bytes(tail[12:16], "little") == 1  # chunk count
    assert int.from_bytes(tail[16:24], "little") == 7  # table offset
    assert int.from_bytes(tail[24:32], "little") == 10  # uncompressed size
    assert tail[32:64] == blake3_digest(blob[7:-64])
    entry = blob[7:-64]
    assert int.from_bytes(entry[16:20], "little") == 10 and int.from_bytes(entry[20:24], "little") == 7
    assert int.from_bytes(entry[24:28], "little") == Compressor.ZSTD and entry[32:64] == DIGEST


def test_find_at_chunk_boundaries_and_in_gaps() -> None:
    a, b, c = _entry(0, 4096), _entry(4096, 5), _entry(12288, 5)
    table = _decode(_blob([a, b, c], 100))
    assert table.find(-1) is None
    assert table.find(0) == a and table.find(4095) == a
    assert table.find(4096) == b and table.find(4100) == b
    assert table.find(4101) is None and table.find(12287) is None
    assert table.find(12288) == c and table.find(12292) == c
    assert table.find(12293) is None
    assert len(table) == 3


def test_find_in_an_empty_table_is_none() -> None:
    table = _decode(_blob([], 0))
    assert len(table) == 0 and table.find(0) is None


def test_bad_magic_is_rejected() -> None:
    blob = bytearray(_blob([_entry(0, 10)], 10))
    blob[-64] ^= 0x01
    with pytest.raises(RemoteProtocolError, match="magic"):
        decode_tail(bytes(blob[-64:]), len(blob))


def test_wrong_version_is_rejected() -> None:
    blob = _raw_blob([(0, 0, 10, 1, 1, 0, DIGEST)], 10, 10, version=2)
    with pytest.raises(RemoteProtocolError, match="version 2"):
        decode_tail(blob[-64:], len(blob))


def test_tail_of_the_wrong_length_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_tail(b"\0" * 63, 63)


@pytest.mark.parametrize("delta", [-1, 1, 64])
def test_tail_that_does_not_end_the_blob_is_rejected(delta: int) -> None:
    blob = _blob([_entry(0, 10)], 10)
    with pytest.raises(RemoteProtocolError, match="does not end"):
        decode_tail(blob[-64:], len(blob) + delta)


def test_flipping_any_byte_of_the_table_fails_its_digest() -> None:
    entries = [
        _entry(0, 10, 0, 4),
        _entry(10, 10, 4, 4, Compressor.LZ4),
        _entry(30, 1, 8, 1, Compressor.NONE),
    ]
    blob = _blob(entries, 9)
    tail = decode_tail(blob[-64:], len(blob))
    table = blob[9:-64]
    for i in range(len(table)):
        damaged = bytearray(table)
        damaged[i] ^= 0x80
        with pytest.raises(RemoteProtocolError, match="digest mismatch"):
            decode_table(bytes(damaged), tail)


def test_table_of_the_wrong_length_is_rejected() -> None:
    blob = _blob([_entry(0, 10)], 10)
    tail = decode_tail(blob[-64:], len(blob))
    with pytest.raises(RemoteProtocolError, match="expected 64"):
        decode_table(blob[10:-65], tail)


def test_out_of_order_entries_are_rejected() -> None:
    blob = _raw_blob([(4096, 0, 10, 1, 1, 0, DIGEST), (0, 1, 10, 1, 1, 0, DIGEST)], 2, 10)
    with pytest.raises(RemoteProtocolError, match="chunk 1: out of order"):
        _decode(blob)


def test_unaligned_entry_is_rejected() -> None:
    blob = _raw_blob([(0, 0, 10, 1, 1, 0, DIGEST), (10, 1, 10, 1, 1, 0, DIGEST)], 2, 20)
    with pytest.raises(RemoteProtocolError, match="not 4 KiB aligned"):
        _decode(blob)


def test_overlapping_entries_are_rejected() -> None:
    blob = _raw_blob([(0, 0, 10, 1, 1, 0, DIGEST), (9, 1, 10, 1, 1, 0, DIGEST)], 2, 19)
    with pytest.raises(RemoteProtocolError, match="chunk 1"):
        _decode(blob)


def test_entry_whose_bytes_pass_the_table_offset_is_rejected() -> None:
    blob = _raw_blob([(0, 5, 10, 6, 1, 0, DIGEST)], 10, 10)
    with pytest.raises(RemoteProtocolError, match="out of bounds"):
        _decode(blob)


def test_empty_entry_is_rejected() -> None:
    blob = _raw_blob([(0, 0, 0, 0, 0, 0, DIGEST)], 0, 0)
    with pytest.raises(RemoteProtocolError, match="chunk 0"):
        _decode(blob)


@pytest.mark.parametrize("flags", [3, 0xF, 0x13])
def test_unknown_compressor_is_rejected(flags: int) -> None:
    blob = _raw_blob([(0, 0, 10, 1, flags, 0, DIGEST)], 1, 10)
    with pytest.raises(RemoteProtocolError, match="unknown compressor"):
        _decode(blob)


def test_compressor_is_read_from_the_low_four_flag_bits() -> None:
    blob = _raw_blob([(0, 0, 10, 1, 0x10 | Compressor.LZ4, 0, DIGEST)], 1, 10)
    assert _decode(blob).entries[0].compressor is Compressor.LZ4


def test_table_that_does_not_cover_the_uncompressed_size_is_rejected() -> None:
    blob = _raw_blob([(0, 0, 10, 1, 1, 0, DIGEST)], 1, 11)
    with pytest.raises(RemoteProtocolError, match="does not cover"):
        _decode(blob)


@pytest.mark.parametrize(
    "entries",
    [[_entry(10, 5), _entry(0, 5)], [_entry(0, 10), _entry(5, 10)]],
    ids=["unsorted", "overlapping"],
)
def test_encode_table_refuses_unsorted_or_overlapping_entries(entries: list[ChunkEntry]) -> None:
    with pytest.raises(LocalProtocolError, match="sorted"):
        encode_table(entries, 100)
