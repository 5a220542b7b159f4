"""The data-blob chunk table: the self-description at the end of every data blob.

A blob is `chunk bytes ‖ table ‖ tail`. The tail (64 bytes, at the very end) locates the table and
carries its blake3, so a reader that has only the blob can list, fetch and verify its chunks.
Rules: entries are sorted by uncompressed offset, never overlap, and start on 4 KiB boundaries;
the table is rejected whole when its digest, its bounds, its ordering or an alignment is wrong.
"""

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from lazyfly.compression import Compressor
from lazyfly.digest import blake3_digest
from lazyfly.errors import LocalProtocolError, RemoteProtocolError
from lazyfly.format.layout import (
    BLOB_MAGIC,
    BLOB_TAIL,
    BLOB_VERSION,
    CHUNK_ENTRY,
    COMPRESSOR_MASK,
    UNCOMPRESSED_ALIGNMENT,
    ChunkEntry,
)

TAIL_SIZE = BLOB_TAIL.size


@dataclass(frozen=True, slots=True)
class BlobTail:
    """The decoded tail of a data blob."""

    chunk_count: int
    table_offset: int
    uncompressed_size: int
    table_digest: bytes

    @property
    def table_size(self) -> int:
        """Bytes of the chunk table that sits right before the tail."""
        return self.chunk_count * CHUNK_ENTRY.size


def encode_table(entries: Sequence[ChunkEntry], table_offset: int) -> bytes:
    """Return table ‖ tail for `entries`, to be appended at `table_offset` of the blob."""
    parts = []
    end = 0
    for e in entries:
        if e.uncompressed_offset < end:
            raise LocalProtocolError("chunk entries must be sorted by uncompressed offset")
        end = e.uncompressed_offset + e.uncompressed_size
        parts.append(
            CHUNK_ENTRY.pack(
                e.uncompressed_offset,
                e.compressed_offset,
                e.uncompressed_size,
                e.compressed_size,
                int(e.compressor),
                0,
                e.digest,
            )
        )
    table = b"".join(parts)
    tail = BLOB_TAIL.pack(BLOB_MAGIC, BLOB_VERSION, 0, len(entries), table_offset, end, blake3_digest(table))
    return table + tail


def decode_tail(data: bytes, blob_size: int) -> BlobTail:
    """Decode the last TAIL_SIZE bytes of a blob of `blob_size` bytes."""
    if len(data) != TAIL_SIZE:
        raise RemoteProtocolError(f"blob tail is {len(data)} bytes, expected {TAIL_SIZE}")
    magic, version, _flags, count, table_offset, usize, digest = BLOB_TAIL.unpack(data)
    if magic != BLOB_MAGIC:
        raise RemoteProtocolError("not a lazyfly data blob (bad tail magic)")
    if version != BLOB_VERSION:
        raise RemoteProtocolError(f"unsupported data blob version {version}")
    tail = BlobTail(count, table_offset, usize, digest)
    if table_offset + tail.table_size + TAIL_SIZE != blob_size:
        raise RemoteProtocolError(
            f"blob tail places its table at {table_offset} with {count} entries, "
            f"which does not end the {blob_size}-byte blob"
        )
    return tail


def decode_table(data: bytes, tail: BlobTail) -> "ChunkTable":
    """Decode and verify the table bytes that `tail` describes."""
    if len(data) != tail.table_size:
        raise RemoteProtocolError(f"chunk table is {len(data)} bytes, expected {tail.table_size}")
    if blake3_digest(data) != tail.table_digest:
        raise RemoteProtocolError("chunk table digest mismatch")
    entries = []
    uend = 0
    for i, fields in enumerate(CHUNK_ENTRY.iter_unpack(data)):
        uoff, coff, usize, csize, flags, _reserved, digest = fields
        try:
            compressor = Compressor(flags & COMPRESSOR_MASK)
        except ValueError:
            raise RemoteProtocolError(f"chunk {i}: unknown compressor {flags & COMPRESSOR_MASK}") from None
        if uoff < uend or coff + csize > tail.table_offset or usize == 0:
            raise RemoteProtocolError(f"chunk {i}: out of order or out of bounds")
        if uoff % UNCOMPRESSED_ALIGNMENT:
            raise RemoteProtocolError(f"chunk {i}: uncompressed offset {uoff} is not 4 KiB aligned")
        uend = uoff + usize
        entries.append(ChunkEntry(uoff, coff, usize, csize, compressor, digest))
    if uend != tail.uncompressed_size:
        raise RemoteProtocolError("chunk table does not cover the blob's uncompressed size")
    return ChunkTable(entries)


class ChunkTable:
    """The chunks of one blob, searchable by uncompressed offset."""

    def __init__(self, entries: list[ChunkEntry]) -> None:
        self.entries = entries
        self._starts = [e.uncompressed_offset for e in entries]

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, uncompressed_offset: int) -> ChunkEntry | None:
        """Return the chunk that holds `uncompressed_offset`, or None."""
        i = bisect.bisect_right(self._starts, uncompressed_offset) - 1
        if i < 0:
            return None
        entry = self.entries[i]
        if uncompressed_offset >= entry.uncompressed_offset + entry.uncompressed_size:
            return None
        return entry
