import os
import subprocess
import sys
from pathlib import Path

import pytest

from lazyfly.errors import Corrupt, FailedPrecondition
from lazyfly.fusefs.chunk_map import MAP_HEADER, MAP_HEADER_SIZE, PAGE, ChunkMap, bitmap_size

BLOB_A = "sha256:" + "a" * 64
BLOB_B = "sha256:" + "b" * 64
SIZE = 100 * PAGE + 123  # 101 started pages


def test_a_new_map_has_no_ready_chunks_and_the_right_length(tmp_path: Path):
    m = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    try:
        assert m.fresh and m.ready_count() == 0
        assert not any(m.is_ready(k * PAGE) for k in range(101))
        assert os.path.getsize(tmp_path / "m") == MAP_HEADER_SIZE + 13 == MAP_HEADER_SIZE + bitmap_size(SIZE)
    finally:
        m.close()


def test_marked_chunks_are_ready_and_counted(tmp_path: Path):
    m = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    for page in (0, 7, 8, 100):
        m.mark_ready(page * PAGE)
    m.mark_ready(7 * PAGE)  # marking twice is harmless
    assert m.ready_count() == 4
    assert m.is_ready(8 * PAGE) and not m.is_ready(9 * PAGE)
    m.close()


@pytest.mark.parametrize("offset", [1, PAGE + 1, -PAGE, 101 * PAGE, 1 << 40])
def test_an_unaligned_or_outside_offset_is_corrupt(tmp_path: Path, offset: int):
    m = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    with pytest.raises(Corrupt, match=BLOB_A):
        m.is_ready(offset)
    with pytest.raises(Corrupt):
        m.mark_ready(offset)
    assert m.ready_count() == 0
    m.close()


def test_a_cleanly_closed_map_is_reused(tmp_path: Path):
    m = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    m.mark_ready(5 * PAGE)
    m.close()
    m.close()  # idempotent
    again = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    assert not again.fresh and again.is_ready(5 * PAGE) and again.ready_count() == 1
    again.close()


def test_a_map_of_another_blob_is_not_reused(tmp_path: Path):
    m = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    m.mark_ready(0)
    m.close()
    other = ChunkMap.open(tmp_path / "m", BLOB_B, SIZE)
    assert other.fresh and other.ready_count() == 0
    other.close()


@pytest.mark.parametrize("damage", ["size", "magic", "truncated"])
def test_a_map_with_another_size_or_a_damaged_file_starts_empty(tmp_path: Path, damage: str):
    m = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    m.mark_ready(0)
    m.close()
    size = SIZE
    if damage == "size":
        size = SIZE + 64 * PAGE
    elif damage == "magic":
        with open(tmp_path / "m", "r+b") as f:
            f.write(b"NOTAMAP!")
    else:
        os.truncate(tmp_path / "m", MAP_HEADER_SIZE + 2)
    again = ChunkMap.open(tmp_path / "m", BLOB_A, size)
    assert again.fresh and again.ready_count() == 0
    again.close()


def test_a_second_opener_is_refused_while_the_map_is_open(tmp_path: Path):
    m = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    with pytest.raises(FailedPrecondition, match="in use"):
        ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    m.close()
    ChunkMap.open(tmp_path / "m", BLOB_A, SIZE).close()


def _crash_after_marking(path: Path) -> None:
    """Open the map in a child process, mark page 3 and die without closing (like kill -9)."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from lazyfly.fusefs.chunk_map import ChunkMap\n"
        f"m = ChunkMap.open(Path({str(path)!r}), {BLOB_A!r}, {SIZE})\n"
        f"m.mark_ready(3 * {PAGE})\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bits_survive_a_daemon_crash_in_the_same_boot(tmp_path: Path):
    _crash_after_marking(tmp_path / "m")
    again = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    assert not again.fresh and again.is_ready(3 * PAGE)
    again.close()


def test_a_map_left_open_by_another_boot_is_reset(tmp_path: Path):
    _crash_after_marking(tmp_path / "m")
    raw = bytearray((tmp_path / "m").read_bytes()[:MAP_HEADER_SIZE])
    fields = list(MAP_HEADER.unpack(raw))
    fields[5] = b"\x99" * 16  # the boot id: as if the machine lost power and rebooted
    with open(tmp_path / "m", "r+b") as f:
        f.write(MAP_HEADER.pack(*fields))
    again = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    assert again.fresh and again.ready_count() == 0
    again.close()


def test_a_map_closed_cleanly_by_another_boot_is_reused(tmp_path: Path):
    m = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    m.mark_ready(PAGE)
    m.close()
    fields = list(MAP_HEADER.unpack((tmp_path / "m").read_bytes()[:MAP_HEADER_SIZE]))
    fields[5] = b"\x99" * 16
    with open(tmp_path / "m", "r+b") as f:
        f.write(MAP_HEADER.pack(*fields))
    again = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    assert not again.fresh and again.is_ready(PAGE)
    again.close()


def test_an_empty_blob_has_no_pages(tmp_path: Path):
    m = ChunkMap.open(tmp_path / "m", BLOB_A, 0)
    assert m.ready_count() == 0
    with pytest.raises(Corrupt):
        m.is_ready(0)
    m.close()


def test_a_closed_map_refuses_use(tmp_path: Path):
    m = ChunkMap.open(tmp_path / "m", BLOB_A, SIZE)
    m.close()
    with pytest.raises(FailedPrecondition):
        m.is_ready(0)
