"""Tests of lazyfly.format.bootstrap_writer and bootstrap_reader: encode, read lazily, verify by block."""

import functools
import itertools
import os
import stat
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lazyfly.compression import Compressor
from lazyfly.digest import blake3_digest
from lazyfly.errors import Corrupt, LocalProtocolError, NotFound
from lazyfly.format.bootstrap_reader import Bootstrap, open_bootstrap
from lazyfly.format.bootstrap_writer import encode_bootstrap
from lazyfly.format.layout import (
    HEADER,
    HEADER_SIZE,
    INODE,
    VERIFY_BLOCK_SIZE,
    BlobInfo,
    ChunkRef,
    InodeSpec,
)

CHUNK = 4096
DIR, REG, LNK = 0o040000, 0o100000, 0o120000
BLOB0 = BlobInfo("sha256:" + "ab" * 32, 1000, 5000, 3)


def _ref(offset: int, size: int, blob: int = 0) -> ChunkRef:
    return ChunkRef(
        offset, blob, offset // 2, size // 2, offset, size, Compressor.ZSTD, bytes([offset % 251]) * 32
    )


def _flat(n: int, name_width: int = 6) -> list[InodeSpec]:
    """A root directory holding `n` empty regular files named f000000, f000001, ..."""
    root = InodeSpec(mode=DIR | 0o755, nlink=2, parent=1)
    root.entries = [(f"f{i:0{name_width}d}".encode(), i + 2) for i in range(n)]
    return [root] + [InodeSpec(mode=REG | 0o644, size=i, uid=i) for i in range(n)]


def _header(buf: bytes) -> dict[str, int]:
    f = HEADER.unpack_from(buf, 0)
    names = ["inodes", "dirents", "chunks", "xattrs", "strings", "blobs", "prefetch"]
    out = {
        "block": f[5],
        "inode_count": f[6],
        "digest_offset": f[22],
        "block_count": f[23],
        "file_size": f[24],
    }
    for i, n in enumerate(names):
        out[n] = f[8 + 2 * i]
        out[n + "_size"] = f[9 + 2 * i]
    return out


# --- the random-tree model -----------------------------------------------------------------------

_NAME = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=12).map(str.encode),
    st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b),
    st.just(b"n" * 255),
    st.just(("é" * 127 + "x").encode()),  # 255 bytes of UTF-8
).filter(lambda b: b not in (b".", b".."))
_XATTRS = st.dictionaries(st.binary(min_size=1, max_size=20), st.binary(max_size=40), max_size=3)
_MTIME = st.integers(-(1 << 62), 1 << 62)


@st.composite
def _trees(draw: st.DrawFn) -> tuple[list[InodeSpec], list[BlobInfo], list[int], dict[bytes, int]]:
    """Random small trees as the writer wants them, plus every path and its inode number."""
    n_blobs = draw(st.integers(1, 3))
    blobs = [
        BlobInfo(
            "sha256:" + draw(st.binary(min_size=32, max_size=32)).hex(),
            draw(st.integers(0, 1 << 40)),
            draw(st.integers(0, 1 << 40)),
            draw(st.integers(0, 1 << 31)),
        )
        for _ in range(n_blobs)
    ]
    specs = [InodeSpec(mode=DIR | draw(st.integers(0, 0o7777)), parent=1, xattrs=draw(_XATTRS))]
    paths = {b"/": 1}
    files: list[int] = []
    dirs = [(1, b"/")]
    budget = draw(st.integers(0, 30))
    for _ in range(budget):
        parent_ino, parent_path = draw(st.sampled_from(dirs))
        parent = specs[parent_ino - 1]
        name = draw(_NAME)
        if any(name == n for n, _ in parent.entries):
            continue
        path = parent_path.rstrip(b"/") + b"/" + name
        kind = draw(st.sampled_from(["dir", "file", "file", "symlink", "dev", "fifo", "link"]))
        if kind == "link" and files:
            ino = draw(st.sampled_from(files))
            specs[ino - 1].nlink += 1
            parent.entries.append((name, ino))
            paths[path] = ino
            continue
        spec = InodeSpec(
            mode=draw(st.integers(0, 0o7777)),
            uid=draw(st.integers(0, (1 << 32) - 1)),
            gid=draw(st.integers(0, (1 << 32) - 1)),
            mtime_ns=draw(_MTIME),
            blocks=draw(st.integers(0, 1 << 40)),
            xattrs=draw(_XATTRS),
        )
        if kind == "dir":
            spec.mode |= DIR
            spec.parent = parent_ino
            spec.nlink = 2
            parent.nlink += 1
        elif kind in ("file", "link"):
            spec.mode |= REG
            spec.size = draw(st.integers(0, 12 * CHUNK))
            for off in range(0, spec.size, CHUNK):
                if draw(st.booleans()):  # else a hole
                    size = min(CHUNK, spec.size - off)
                    spec.chunks.append(
                        ChunkRef(
                            off,
                            draw(st.integers(0, n_blobs - 1)),
                            draw(st.integers(0, 1 << 50)),
                            draw(st.integers(0, size)),
                            draw(st.integers(0, 1 << 50)),
                            size,
                            draw(st.sampled_from(list(Compressor))),
                            draw(st.binary(min_size=32, max_size=32)),
                        )
                    )
        elif kind == "symlink":
            spec.mode = LNK | 0o777
            spec.target = draw(st.binary(min_size=1, max_size=300))
            spec.size = len(spec.target)
        elif kind == "dev":
            spec.mode |= draw(st.sampled_from([stat.S_IFCHR, stat.S_IFBLK]))
            spec.rdev = os.makedev(draw(st.integers(0, (1 << 31) - 1)), draw(st.integers(0, (1 << 31) - 1)))
        else:
            spec.mode |= stat.S_IFIFO
        specs.append(spec)
        ino = len(specs)
        parent.entries.append((name, ino))
        paths[path] = ino
        if kind == "dir":
            dirs.append((ino, path))
        elif stat.S_ISREG(spec.mode):
            files.append(ino)
    if specs[0].nlink == 1:
        specs[0].nlink = 2
    prefetch = draw(st.lists(st.integers(1, len(specs)), max_size=5, unique=True))
    return specs, blobs, prefetch, paths


def _overlapping(refs: list[ChunkRef], offset: int, length: int) -> list[ChunkRef]:
    return [
        r for r in refs if r.file_offset < offset + length and r.file_offset + r.uncompressed_size > offset
    ]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees(), data=st.data())
def test_random_trees_round_trip_through_encode_and_read(tree, data: st.DataObject) -> None:
    specs, blobs, prefetch, paths = tree
    boot = Bootstrap(encode_bootstrap(specs, blobs, prefetch, CHUNK))
    assert boot.inode_count == len(specs) and boot.root_ino == 1 and boot.chunk_size == CHUNK
    for ino, spec in enumerate(specs, start=1):
        inode = boot.inode(ino)
        got = (inode.mode, inode.uid, inode.gid, inode.nlink, inode.size, inode.blocks, inode.mtime_ns)
        assert got == (spec.mode, spec.uid, spec.gid, spec.nlink, spec.size, spec.blocks, spec.mtime_ns)
        assert inode.rdev == spec.rdev and inode.parent == spec.parent
        assert boot.xattrs(inode) == spec.xattrs
        if stat.S_ISDIR(spec.mode):
            entries = list(boot.entries(inode))
            assert entries == [(n, i, specs[i - 1].mode >> 12) for n, i in sorted(spec.entries)]
            for name, child in spec.entries:
                assert boot.lookup(inode, name) == child
            missing = max((n for n, _ in spec.entries), default=b"") + b"\xff"
            assert boot.lookup(inode, missing) is None
            assert boot.chunks(inode) == []
        elif stat.S_ISREG(spec.mode):
            assert boot.chunks(inode) == spec.chunks
            for _ in range(3):
                offset = data.draw(st.integers(0, spec.size + CHUNK))
                length = data.draw(st.integers(1, 4 * CHUNK))
                assert boot.chunks_in_range(inode, offset, length) == _overlapping(
                    spec.chunks, offset, length
                )
            assert boot.lookup(inode, b"x") is None
        elif stat.S_ISLNK(spec.mode):
            assert boot.readlink(inode) == spec.target
        if stat.S_ISCHR(spec.mode) or stat.S_ISBLK(spec.mode):
            assert (os.major(inode.rdev), os.minor(inode.rdev)) == (os.major(spec.rdev), os.minor(spec.rdev))
    assert boot.blobs() == blobs
    assert boot.prefetch() == prefetch
    walked = [(p, i.ino) for p, i in boot.walk()]
    assert dict(walked) == paths and len(walked) == len(paths)
    seen = set()
    for path, _ in walked:  # parents before children
        assert (path.rsplit(b"/", 1)[0] or b"/") in seen or path == b"/"
        seen.add(path)
    for path, ino in paths.items():
        assert boot.resolve(path) == ino
    boot.verify_all()


def test_many_chunks_in_range_match_a_brute_force_filter() -> None:
    refs = [_ref(off, CHUNK) for off in range(0, 300 * CHUNK, CHUNK) if off % (7 * CHUNK)]
    root = InodeSpec(mode=DIR | 0o755, entries=[(b"big", 2)])
    boot = Bootstrap(
        encode_bootstrap([root, InodeSpec(mode=REG, size=300 * CHUNK, chunks=refs)], [BLOB0], [], CHUNK)
    )
    inode = boot.inode(2)
    for offset in range(0, 301 * CHUNK, 1531):
        for length in (1, CHUNK - 1, CHUNK, 5 * CHUNK + 3, 40 * CHUNK):
            assert boot.chunks_in_range(inode, offset, length) == _overlapping(refs, offset, length)


def test_chunks_in_range_of_a_directory_is_empty() -> None:
    boot = Bootstrap(encode_bootstrap(_flat(1), [], [], CHUNK))
    assert boot.chunks_in_range(boot.inode(1), 0, 1) == []


def test_resolve_of_a_missing_path_raises_not_found() -> None:
    boot = Bootstrap(encode_bootstrap(_flat(3), [], [], CHUNK))
    assert boot.resolve("/f000002") == 4 and boot.resolve(b"//f000000/") == 2 and boot.resolve("/") == 1
    with pytest.raises(NotFound):
        boot.resolve("/nope")
    with pytest.raises(NotFound):
        boot.resolve("/f000000/below-a-file")


@pytest.mark.parametrize("ino", [0, -1, 5])
def test_inode_outside_the_table_raises_not_found(ino: int) -> None:
    boot = Bootstrap(encode_bootstrap(_flat(3), [], [], CHUNK))
    with pytest.raises(NotFound):
        boot.inode(ino)


def test_header_and_sections_follow_the_documented_layout() -> None:
    specs = _flat(3)
    specs[1].target = b"x"  # an odd-sized string heap forces padding before the blobs
    buf = encode_bootstrap(specs, [BLOB0], [2], CHUNK)
    h = _header(buf)
    assert buf[:8] == b"LZFYBOOT" and struct.unpack_from("<HHI", buf, 8) == (1, 256, 0)
    assert h["block"] == VERIFY_BLOCK_SIZE and h["inode_count"] == 4 and h["inodes"] == HEADER_SIZE
    order = ["inodes", "dirents", "chunks", "xattrs", "strings", "blobs", "prefetch"]
    for a, b in itertools.pairwise(order):
        assert h[b] == h[a] + h[a + "_size"] + (-(h[a] + h[a + "_size"]) % 8)
    assert all(h[n] % 8 == 0 for n in order)
    assert h["digest_offset"] % 8 == 0 and h["file_size"] == len(buf)
    assert buf[168:224] == bytes(56)
    digests = buf[h["digest_offset"] :]
    assert buf[224:256] == blake3_digest(buf[:224] + digests)
    assert digests[:32] == blake3_digest(buf[256 : h["digest_offset"]])
    inode = buf[256 : 256 + INODE.size]
    assert struct.unpack_from("<I", inode, 60) == (0,) and struct.unpack_from("<I", inode, 64) == (3,)


def test_strings_are_stored_once() -> None:
    specs = _flat(2)
    specs[1].xattrs = {b"user.a": b"f000001"}
    specs[2].xattrs = {b"user.a": b"f000001"}
    h = _header(encode_bootstrap(specs, [], [], CHUNK))
    assert h["strings_size"] == len(b"f000000f000001user.a")


def test_mtime_is_split_into_seconds_and_nanoseconds() -> None:
    specs = _flat(1)
    specs[1].mtime_ns = -1_500_000_001  # before 1970: seconds floor, nanoseconds positive
    buf = encode_bootstrap(specs, [], [], CHUNK)
    record = buf[256 + INODE.size : 256 + 2 * INODE.size]
    assert struct.unpack_from("<qI", record, 32) == (-2, 499_999_999)
    assert Bootstrap(buf).inode(2).mtime_ns == -1_500_000_001


# --- damage -------------------------------------------------------------------------------------

BIG = encode_bootstrap(_flat(2000), [BLOB0], [2, 3], CHUNK)  # ~200 KiB: four 64 KiB body blocks


def test_big_fixture_spans_several_blocks() -> None:
    assert _header(BIG)["block_count"] >= 3


def test_truncation_anywhere_raises_corrupt() -> None:
    for cut in [*range(0, len(BIG), 997), len(BIG) - 1]:
        with pytest.raises(Corrupt):
            Bootstrap(BIG[:cut])


def test_padding_raises_corrupt() -> None:
    with pytest.raises(Corrupt, match="padded"):
        Bootstrap(BIG + b"\0")


def test_any_flipped_header_byte_raises_corrupt_on_open() -> None:
    for i in range(HEADER_SIZE):
        damaged = bytearray(BIG)
        damaged[i] ^= 0x01
        with pytest.raises(Corrupt):
            Bootstrap(bytes(damaged))


def test_any_flipped_digest_table_byte_raises_corrupt_on_open() -> None:
    start = _header(BIG)["digest_offset"]
    for i in range(start, len(BIG)):
        damaged = bytearray(BIG)
        damaged[i] ^= 0x40
        with pytest.raises(Corrupt, match="header checksum"):
            Bootstrap(bytes(damaged))


def _block_of_inode(buf: bytes, ino: int) -> tuple[int, int]:
    off = _header(buf)["inodes"] + (ino - 1) * INODE.size
    return off, (off - HEADER_SIZE) // VERIFY_BLOCK_SIZE


def test_flipped_body_byte_fails_only_the_records_of_its_block() -> None:
    per_block = VERIFY_BLOCK_SIZE // INODE.size
    victim = per_block + per_block // 2  # an inode in the middle of block 1
    off, block = _block_of_inode(BIG, victim)
    assert block == 1
    damaged = bytearray(BIG)
    damaged[off + 4] ^= 0x01  # its uid
    boot = Bootstrap(bytes(damaged))  # opening reads no body block
    for _ in range(2):  # and a failed block stays failed
        with pytest.raises(Corrupt, match="block 1"):
            boot.inode(victim)
    with pytest.raises(Corrupt, match="block 1"):
        boot.inode(victim + 3)  # another record of the same block
    for ino in (2, 10, 2 * per_block + 10):  # records in blocks 0 and 2 still read fine
        assert _block_of_inode(BIG, ino)[1] != 1
        assert boot.inode(ino).uid == ino - 2
    with pytest.raises(Corrupt):
        boot.verify_all()


def test_flipped_byte_in_the_last_short_block_fails_verify_all() -> None:
    h = _header(BIG)
    damaged = bytearray(BIG)
    damaged[h["digest_offset"] - 1] ^= 0x01
    boot = Bootstrap(bytes(damaged))
    assert boot.inode(2).uid == 0
    with pytest.raises(Corrupt, match=f"block {h['block_count'] - 1}"):
        boot.verify_all()


def test_open_bootstrap_maps_a_file_and_names_it_in_errors(tmp_path) -> None:
    good = tmp_path / "image.boot"
    good.write_bytes(BIG)
    boot = open_bootstrap(good)
    assert boot.resolve("/f001999") == 2001
    bad = tmp_path / "bad.boot"
    bad.write_bytes(BIG[:-1])
    with pytest.raises(Corrupt, match=r"bad\.boot"):
        open_bootstrap(bad)
    empty = tmp_path / "empty.boot"
    empty.write_bytes(b"")
    with pytest.raises(Corrupt, match="empty"):
        open_bootstrap(empty)


# --- laziness -----------------------------------------------------------------------------------


@functools.cache
def _hundred_thousand_files() -> bytes:
    return encode_bootstrap(_flat(100_000), [], [], CHUNK)


class _CountingBytes(bytes):
    """Bytes that count how many bytes the reader slices out of them."""

    read = 0

    def __getitem__(self, key):  # type: ignore[override]
        out = super().__getitem__(key)
        if isinstance(key, slice):
            self.read += len(out)
        return out


def test_lookup_in_100000_files_verifies_a_handful_of_blocks() -> None:
    buf = _hundred_thousand_files()
    assert len(buf) > 10 << 20
    boot = Bootstrap(buf)
    assert sum(boot._verified) == 0
    ino = boot.resolve("/f077777")
    assert ino == 77_779 and boot.inode(ino).uid == 77_777 and boot.inode(ino).size == 77_777
    verified = sum(boot._verified)
    assert 1 <= verified <= 16, verified
    assert verified * VERIFY_BLOCK_SIZE < len(buf) // 10
    assert len(boot._verified) == -(-(_header(buf)["digest_offset"] - HEADER_SIZE) // VERIFY_BLOCK_SIZE)


def test_open_and_lookup_slice_far_less_than_the_file() -> None:
    buf = _hundred_thousand_files()
    counting = _CountingBytes(buf)
    boot = Bootstrap(counting)
    opened = counting.read
    assert opened < 64 << 10  # header plus the block-digest table
    assert boot.lookup(boot.inode(1), b"f012345") == 12_347
    assert counting.read - opened < 20 * VERIFY_BLOCK_SIZE
    assert counting.read < len(buf) // 10


# --- writer refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entries",
    [[(b"a", 2), (b"a", 2)], [(b"a/b", 2)], [(b"", 2)], [(b".", 2)], [(b"..", 2)], [(b"a", 9)], [(b"a", 0)]],
    ids=["duplicate", "slash", "empty", "dot", "dotdot", "past-last-inode", "zero"],
)
def test_writer_rejects_bad_directory_entries(entries: list[tuple[bytes, int]]) -> None:
    specs = [InodeSpec(mode=DIR | 0o755, entries=entries), InodeSpec(mode=REG)]
    with pytest.raises(LocalProtocolError):
        encode_bootstrap(specs, [], [], CHUNK)


def test_writer_rejects_a_chunk_ref_past_the_file_size() -> None:
    specs = [
        InodeSpec(mode=DIR, entries=[(b"f", 2)]),
        InodeSpec(mode=REG, size=CHUNK - 1, chunks=[_ref(0, CHUNK)]),
    ]
    with pytest.raises(LocalProtocolError, match="pass the file size"):
        encode_bootstrap(specs, [BLOB0], [], CHUNK)


def test_writer_rejects_overlapping_chunk_refs() -> None:
    refs = [_ref(0, CHUNK), _ref(CHUNK - 1, CHUNK)]
    specs = [InodeSpec(mode=DIR, entries=[(b"f", 2)]), InodeSpec(mode=REG, size=4 * CHUNK, chunks=refs)]
    with pytest.raises(LocalProtocolError, match="overlap"):
        encode_bootstrap(specs, [BLOB0], [], CHUNK)


def test_writer_rejects_a_chunk_ref_to_a_missing_blob() -> None:
    specs = [
        InodeSpec(mode=DIR, entries=[(b"f", 2)]),
        InodeSpec(mode=REG, size=CHUNK, chunks=[_ref(0, CHUNK, 1)]),
    ]
    with pytest.raises(LocalProtocolError, match="blob 1"):
        encode_bootstrap(specs, [BLOB0], [], CHUNK)


@pytest.mark.parametrize("first", [InodeSpec(mode=REG), InodeSpec(mode=LNK, target=b"x")])
def test_writer_rejects_a_first_inode_that_is_not_a_directory(first: InodeSpec) -> None:
    with pytest.raises(LocalProtocolError, match="root directory"):
        encode_bootstrap([first], [], [], CHUNK)


def test_writer_rejects_no_inodes() -> None:
    with pytest.raises(LocalProtocolError):
        encode_bootstrap([], [], [], CHUNK)


@pytest.mark.parametrize("size", [0, 2048, 4097, 32 << 20])
def test_writer_rejects_an_invalid_chunk_size(size: int) -> None:
    with pytest.raises(LocalProtocolError, match="chunk size"):
        encode_bootstrap(_flat(0), [], [], size)
