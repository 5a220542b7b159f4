"""Fuzz the bootstrap reader and the chunk-table decoder with mutated valid inputs (h11 `fuzz/` style).

Rule checked: whatever bytes arrive, the decoders raise only lazyfly.errors.Corrupt (RemoteProtocolError
is one) or NotFound, never IndexError, struct.error, MemoryError or an endless loop. Two kinds of
damage: raw mutations (caught by the checksums) and mutations re-sealed with fresh checksums, which
is what a buggy or hostile writer produces and what the structural checks behind the checksums face.
"""

import itertools
import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lazyfly.compression import Compressor
from lazyfly.digest import blake3_digest
from lazyfly.errors import Corrupt, NotFound
from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.format.bootstrap_writer import encode_bootstrap
from lazyfly.format.chunk_table import TAIL_SIZE, decode_table, decode_tail, encode_table
from lazyfly.format.layout import (
    HEADER,
    HEADER_DIGEST_OFFSET,
    HEADER_SIZE,
    VERIFY_BLOCK_SIZE,
    BlobInfo,
    ChunkEntry,
    ChunkRef,
    InodeSpec,
)

CHUNK = 4096
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Re-sealed fuzzing with a fixed seed, so a failure reproduces.
FUZZ_FIXED = settings(FUZZ, derandomize=True, database=None)


def _ref(off: int, size: int, blob: int) -> ChunkRef:
    return ChunkRef(
        off, blob, off, size // 2, off, size, Compressor(off // CHUNK % 3), bytes([off % 256]) * 32
    )


def _valid_bootstrap() -> bytes:
    """Every record type: dirs, chunked files with holes, a hard link, symlink, device, fifo, xattrs."""
    specs = [
        InodeSpec(mode=0o040755, nlink=3, parent=1, entries=[(b"bin", 2), (b"etc", 3), (b"hard", 4)]),
        InodeSpec(mode=0o040755, nlink=2, parent=1, entries=[(b"sh", 4), (b"ln", 5), (b"null", 6)]),
        InodeSpec(mode=0o040700, nlink=2, parent=1, entries=[("pässwd".encode(), 7), (b"fifo", 8)]),
        InodeSpec(
            mode=0o100755,
            nlink=2,
            size=5 * CHUNK + 7,
            chunks=[_ref(0, CHUNK, 0), _ref(2 * CHUNK, CHUNK, 1), _ref(5 * CHUNK, 7, 0)],
            xattrs={b"security.capability": bytes(range(20)), b"user.x": b""},
        ),
        InodeSpec(mode=0o120777, size=2, target=b"sh"),
        InodeSpec(mode=0o020666, rdev=os.makedev(1, 3)),
        InodeSpec(mode=0o100600, size=100, chunks=[_ref(0, 100, 1)], mtime_ns=-5),
        InodeSpec(mode=0o010644, xattrs={b"user.x": b"sh"}),
    ]
    blobs = [BlobInfo("sha256:" + "11" * 32, 10, 20, 2), BlobInfo("sha256:" + "22" * 32, 30, 40, 2)]
    return encode_bootstrap(specs, blobs, [4, 7], CHUNK)


VALID = _valid_bootstrap()
DIGEST_OFFSET = HEADER.unpack_from(VALID, 0)[22]


def _exercise(buf: bytes) -> None:
    """Open `buf` and read everything in it; Corrupt and NotFound are the only allowed failures."""
    try:
        boot = Bootstrap(buf)
        seen_dirs: set[int] = set()
        for path, inode in boot.walk():
            if stat.S_ISDIR(inode.mode):
                assert inode.ino not in seen_dirs, (
                    f"walk reached directory inode {inode.ino} twice ({path!r})"
                )
                seen_dirs.add(inode.ino)
                for name, _, _ in boot.entries(inode):
                    boot.lookup(inode, name)
            boot.chunks(inode)
            boot.xattrs(inode)
            if stat.S_ISLNK(inode.mode):
                boot.readlink(inode)
            if stat.S_ISREG(inode.mode):
                boot.chunks_in_range(inode, 0, max(inode.size, 1))
        boot.blobs()
        boot.prefetch()
        boot.resolve("/bin/sh")
        boot.verify_all()
    except (Corrupt, NotFound):
        pass


_OPS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(VALID) - 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, len(VALID) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(VALID)), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, len(VALID) - 1), st.integers(1, 64)),
)


def _mutate(buf: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(buf)
    for op, pos, arg in ops:
        pos = min(pos, max(len(out) - 1, 0))
        if op == "flip" and out:
            out[pos] ^= arg
        elif op == "truncate":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = bytes([arg]) * (1 + arg % 7)
        elif op == "delete":
            del out[pos : pos + arg]
    return bytes(out)


def _reseal(buf: bytearray) -> bytes:
    """Recompute the block digests and header checksum as the original layout places them."""
    body = bytes(buf[HEADER_SIZE:DIGEST_OFFSET])
    digests = b"".join(
        blake3_digest(body[i : i + VERIFY_BLOCK_SIZE]) for i in range(0, len(body), VERIFY_BLOCK_SIZE)
    )
    buf[DIGEST_OFFSET:] = digests
    buf[HEADER_DIGEST_OFFSET:HEADER_SIZE] = blake3_digest(bytes(buf[:HEADER_DIGEST_OFFSET]) + digests)
    return bytes(buf)


# A field-aware write: small or extreme u32/u64 values at aligned offsets of the header or body.
_WRITES = st.tuples(
    st.integers(0, (DIGEST_OFFSET - 1) // 4).map(lambda i: 4 * i).filter(lambda o: not 224 <= o < 256),
    st.sampled_from([4, 8]),
    st.one_of(
        st.integers(0, 12), st.sampled_from([63, 65, 95, 97, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 40, (1 << 64) - 1])
    ),
)


def _write_field(buf: bytearray, off: int, width: int, value: int) -> None:
    width = min(width, DIGEST_OFFSET - off)
    buf[off : off + width] = (value % (1 << (8 * width))).to_bytes(width, "little")


def test_valid_bootstrap_reads_cleanly() -> None:
    boot = Bootstrap(VALID)
    assert [p for p, _ in boot.walk()][:3] == [b"/", b"/bin", b"/bin/ln"]
    assert boot.readlink(boot.inode(boot.resolve("/bin/ln"))) == b"sh"
    _exercise(VALID)
    assert _reseal(bytearray(VALID)) == VALID


@FUZZ
@given(st.lists(_OPS, min_size=1, max_size=4))
def test_raw_mutations_of_a_bootstrap_raise_only_corrupt_or_not_found(ops) -> None:
    _exercise(_mutate(VALID, ops))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, DIGEST_OFFSET - 1), st.integers(1, 255)), min_size=1, max_size=3))
def test_resealed_byte_flips_in_header_and_body_raise_only_corrupt_or_not_found(flips) -> None:
    buf = bytearray(VALID)
    for pos, xor in flips:
        if not HEADER_DIGEST_OFFSET <= pos < HEADER_SIZE:
            buf[pos] ^= xor
    _exercise(_reseal(buf))


@FUZZ_FIXED
@given(st.lists(_WRITES, min_size=1, max_size=3))
def test_resealed_field_writes_raise_only_corrupt_or_not_found(writes) -> None:
    buf = bytearray(VALID)
    for off, width, value in writes:
        _write_field(buf, off, width, value)
    _exercise(_reseal(buf))


# --- the bugs the re-sealed fuzzing finds, as deterministic regressions ---------------------------


def _section(name: str) -> tuple[int, int, int]:
    """(offset of the size field in the header, section offset, section size) in VALID."""
    i = ("inodes", "dirents", "chunks", "xattrs", "strings", "blobs", "prefetch").index(name)
    fields = HEADER.unpack_from(VALID, 0)
    return 32 + 16 * i + 8, fields[8 + 2 * i], fields[9 + 2 * i]


def test_blob_section_of_a_partial_record_raises_corrupt() -> None:
    field, _, size = _section("blobs")
    buf = bytearray(VALID)
    _write_field(buf, field, 8, size - 1)
    with pytest.raises(Corrupt):
        Bootstrap(_reseal(buf)).blobs()


def test_prefetch_section_of_a_partial_record_raises_corrupt() -> None:
    field, _, size = _section("prefetch")
    buf = bytearray(VALID)
    _write_field(buf, field, 8, size - 1)
    with pytest.raises(Corrupt):
        Bootstrap(_reseal(buf)).prefetch()


def test_directory_cycle_is_refused_by_the_writer_or_detected_by_walk() -> None:
    try:
        buf = encode_bootstrap([InodeSpec(mode=0o040755, entries=[(b"self", 1)])], [], [], CHUNK)
    except Exception as exc:  # the writer refusing is a fix too
        assert type(exc).__name__ == "LocalProtocolError"
        return
    with pytest.raises(Corrupt):
        list(itertools.islice(Bootstrap(buf).walk(), 1000))


# --- chunk table --------------------------------------------------------------------------------

_ENTRIES = [
    ChunkEntry(0, 0, 4096, 100, Compressor.ZSTD, b"a" * 32),
    ChunkEntry(4096, 100, 4096, 4096, Compressor.NONE, b"b" * 32),
    ChunkEntry(12288, 4196, 50, 30, Compressor.LZ4, b"c" * 32),
]
TABLE_OFFSET = 4226
BLOB = b"\x5a" * TABLE_OFFSET + encode_table(_ENTRIES, TABLE_OFFSET)


def _exercise_table(blob: bytes) -> None:
    try:
        if len(blob) < TAIL_SIZE:
            return
        tail = decode_tail(blob[-TAIL_SIZE:], len(blob))
        table = decode_table(blob[tail.table_offset : len(blob) - TAIL_SIZE], tail)
        for e in table.entries:
            assert table.find(e.uncompressed_offset) == e
            table.find(e.uncompressed_offset + e.uncompressed_size)
    except Corrupt:
        pass


def test_valid_blob_decodes() -> None:
    tail = decode_tail(BLOB[-TAIL_SIZE:], len(BLOB))
    assert decode_table(BLOB[TABLE_OFFSET:-TAIL_SIZE], tail).entries == _ENTRIES


@FUZZ
@given(st.lists(_OPS, min_size=1, max_size=4))
def test_raw_mutations_of_a_blob_tail_raise_only_corrupt(ops) -> None:
    # positions drawn for the bootstrap are folded onto the table and tail, where the decoder looks
    tail_start = len(BLOB) - 64 * len(_ENTRIES) - TAIL_SIZE
    folded = [(op, tail_start + pos % (len(BLOB) - tail_start), arg) for op, pos, arg in ops]
    _exercise_table(_mutate(BLOB, folded))


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 64 * len(_ENTRIES) + 31), st.integers(1, 255)), min_size=1, max_size=4)
)
def test_resealed_mutations_of_a_chunk_table_raise_only_corrupt(flips) -> None:
    buf = bytearray(BLOB)
    start = TABLE_OFFSET
    for pos, xor in flips:
        buf[start + pos] ^= xor  # table entries, then the tail's first 32 bytes
    table = bytes(buf[start : len(buf) - TAIL_SIZE])
    buf[-32:] = blake3_digest(table)
    _exercise_table(bytes(buf))
