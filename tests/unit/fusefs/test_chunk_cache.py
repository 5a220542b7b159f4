import errno
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from fixtures.memory_maps import mapped_kib, page_cached_bytes

from lazyfly.errors import Corrupt, FailedPrecondition
from lazyfly.files import SYNC_FILE_RANGE_WAIT_BEFORE, sync_file_range
from lazyfly.format.layout import BlobInfo
from lazyfly.fusefs.chunk_cache import DROP_BEHIND, CacheFull, ChunkCache

BLOB = BlobInfo(
    "sha256:" + "c" * 64, compressed_size=1 << 20, uncompressed_size=(8 << 20) + 100, chunk_count=9
)
OTHER = BlobInfo("sha256:" + "d" * 64, BLOB.compressed_size, BLOB.uncompressed_size, BLOB.chunk_count)


def _paths(directory: Path, blob: BlobInfo) -> tuple[Path, Path]:
    stem = blob.digest.replace(":", "-")
    return directory / f"{stem}.data", directory / f"{stem}.map"


def test_written_bytes_read_back_and_the_file_stays_sparse(tmp_path: Path):
    cache = ChunkCache.open(tmp_path / "cache", BLOB)
    data = os.urandom(70000)
    cache.write(1 << 20, data)
    cache.mark_ready(1 << 20)
    assert cache.read(1 << 20, 70000) == data
    assert cache.read((1 << 20) + 5, 10) == data[5:15]
    assert cache.is_ready(1 << 20) and not cache.is_ready(0)
    st = os.stat(cache.data_path)
    assert st.st_size == BLOB.uncompressed_size and st.st_blocks * 512 < 1 << 20
    cache.close()


def test_files_are_named_by_the_blob_digest(tmp_path: Path):
    ChunkCache.open(tmp_path, BLOB).close()
    data_path, map_path = _paths(tmp_path, BLOB)
    assert data_path.is_file() and map_path.is_file()


@pytest.mark.parametrize(("offset", "size"), [(-1, 1), (BLOB.uncompressed_size - 10, 11), (1 << 40, 1)])
def test_ranges_outside_the_blob_are_corrupt(tmp_path: Path, offset: int, size: int):
    cache = ChunkCache.open(tmp_path, BLOB)
    with pytest.raises(Corrupt, match=BLOB.digest):
        cache.read(offset, size)
    with pytest.raises(Corrupt):
        cache.write(offset, b"x" * size)
    cache.close()


def test_a_reopened_cache_keeps_its_ready_chunks_and_bytes(tmp_path: Path):
    cache = ChunkCache.open(tmp_path, BLOB)
    cache.write(4096, b"hello")
    cache.mark_ready(4096)
    cache.close()
    cache.close()  # idempotent
    again = ChunkCache.open(tmp_path, BLOB)
    assert again.is_ready(4096) and again.read(4096, 5) == b"hello"
    assert again.map.ready_count() == 1
    again.close()


def test_files_of_another_blob_are_not_reused(tmp_path: Path):
    cache = ChunkCache.open(tmp_path, OTHER)
    cache.write(0, b"other blob")
    cache.mark_ready(0)
    cache.close()
    for src, dst in zip(_paths(tmp_path, OTHER), _paths(tmp_path, BLOB), strict=True):
        src.rename(dst)
    cache = ChunkCache.open(tmp_path, BLOB)
    assert not cache.is_ready(0)
    assert cache.read(0, 10) == bytes(10)  # stale bytes were dropped with the map
    cache.close()


def test_a_data_file_resized_behind_the_maps_back_resets_the_map(tmp_path: Path):
    cache = ChunkCache.open(tmp_path, BLOB)
    cache.write(0, b"data")
    cache.mark_ready(0)
    cache.close()
    os.truncate(_paths(tmp_path, BLOB)[0], 4096)
    cache = ChunkCache.open(tmp_path, BLOB)
    assert not cache.is_ready(0) and cache.map.ready_count() == 0
    assert os.path.getsize(cache.data_path) == BLOB.uncompressed_size
    cache.close()


def test_a_full_disk_raises_cache_full(tiny_tmpfs: Path):
    cache = ChunkCache.open(tiny_tmpfs, BLOB)
    try:
        with pytest.raises(CacheFull, match="no room"):
            cache.write(0, os.urandom(1 << 20))
        assert not cache.is_ready(0)
    finally:
        cache.close()


def test_a_view_serves_the_cached_bytes_and_only_the_last_views_pages_stay_mapped(tmp_path: Path):
    cache = ChunkCache.open(tmp_path, BLOB)
    data = os.urandom(3 << 20)
    cache.write(0, data)
    first = cache.view(100, 1 << 20)
    assert first == data[100 : 100 + (1 << 20)]
    assert mapped_kib(cache.data_path) >= 1 << 10
    second = cache.view(2 << 20, 1 << 20)
    assert second == data[2 << 20 :]
    assert (1 << 10) <= mapped_kib(cache.data_path) <= (1 << 10) + 4  # the first view's pages are gone
    assert first[:10] == data[100:110]  # an old view still reads right: its pages fault back in
    cache.close()  # with views still held: the mapping goes when they do
    assert bytes(second[-5:]) == data[-5:]


def test_a_span_is_a_view_only_when_it_continues_the_last_one_and_is_long(tmp_path: Path):
    cache = ChunkCache.open(tmp_path, BLOB)
    data = os.urandom(4 << 20)
    cache.write(0, data)
    kinds = []
    for offset, size in [(0, 1 << 20), (1 << 20, 1 << 20), (3 << 20, 1 << 19), (7 << 19, 4096), (0, 1 << 20)]:
        span = cache.read_span(offset, size)
        assert span == data[offset : offset + size]
        kinds.append(type(span))
    # first read, continuation, jump, short continuation, jump back
    assert kinds == [bytes, memoryview, bytes, bytes, bytes]
    cache.close()


MiB = 1 << 20
LONG_BLOB = BlobInfo("sha256:" + "e" * 64, 48 * MiB, 48 * MiB, 48)


TMP_IS_TMPFS = (
    subprocess.run(
        ["stat", "-f", "-c", "%T", tempfile.gettempdir()], capture_output=True, text=True
    ).stdout.strip()
    == "tmpfs"
)


def _read_sequentially(cache: ChunkCache, start: int, stop: int) -> None:
    for offset in range(start, stop, MiB):
        cache.read_span(offset, MiB)


@pytest.mark.skipif(TMP_IS_TMPFS, reason="tmpfs pages cannot be dropped from the page cache")
def test_pages_the_cache_wrote_are_written_back_at_once_and_dropped_behind_a_sequential_reader(
    tmp_path: Path,
):
    cache = ChunkCache.open(tmp_path, LONG_BLOB)
    data = os.urandom(LONG_BLOB.uncompressed_size)
    for offset in range(0, len(data), MiB):
        cache.write(offset, data[offset : offset + MiB])
    with cache.data_path.open("rb") as written:  # the writes started their writeback: wait for it
        sync_file_range(written.fileno(), 0, len(data), SYNC_FILE_RANGE_WAIT_BEFORE)
    assert page_cached_bytes(cache.data_path) == len(data)
    _read_sequentially(cache, 0, DROP_BEHIND * MiB)
    assert page_cached_bytes(cache.data_path) == len(data)  # nothing is DROP_BEHIND behind yet
    _read_sequentially(cache, DROP_BEHIND * MiB, len(data))
    assert page_cached_bytes(cache.data_path) == DROP_BEHIND * MiB
    assert cache.read(0, len(data)) == data  # dropped pages read back from the disk
    cache.close()

    again = ChunkCache.open(tmp_path, LONG_BLOB)  # a warm cache: it wrote nothing
    _read_sequentially(again, 0, len(data))
    assert page_cached_bytes(again.data_path) == len(data)
    again.close()


def test_a_data_file_cut_short_behind_the_caches_back_is_corrupt_not_a_crash(tmp_path: Path):
    cache = ChunkCache.open(tmp_path, BLOB)
    cache.write(0, os.urandom(2 << 20))
    assert len(cache.view(0, 4096)) == 4096
    os.truncate(cache.data_path, 1 << 20)
    with pytest.raises(Corrupt, match="cut short"):
        cache.view(1 << 20, 1 << 20)
    cache.close()


def test_a_quota_error_is_cache_full_and_other_errors_pass_through(tmp_path: Path, monkeypatch):
    cache = ChunkCache.open(tmp_path, BLOB)
    failure = {"errno": errno.EDQUOT}

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        raise OSError(failure["errno"], os.strerror(failure["errno"]))

    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(CacheFull):
        cache.write(0, b"x")
    failure["errno"] = errno.EIO
    with pytest.raises(OSError) as info:
        cache.write(0, b"x")
    assert not isinstance(info.value, CacheFull)
    monkeypatch.undo()
    cache.close()


def test_a_closed_cache_refuses_use(tmp_path: Path):
    cache = ChunkCache.open(tmp_path, BLOB)
    cache.close()
    with pytest.raises(FailedPrecondition):
        cache.read(0, 1)
    with pytest.raises(FailedPrecondition):
        cache.write(0, b"x")
