import errno
import os
from pathlib import Path

import pytest

from lazyfly.files import SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, pread_into, sync_file_range


def test_sync_file_range_starts_and_waits_for_writeback_and_reports_errors_as_oserror(tmp_path: Path):
    path = tmp_path / "data"
    with path.open("wb") as out:
        out.write(os.urandom(1 << 20))
        out.flush()
        sync_file_range(out.fileno(), 0, 1 << 20, SYNC_FILE_RANGE_WRITE)
        sync_file_range(out.fileno(), 0, 1 << 20, SYNC_FILE_RANGE_WAIT_BEFORE)
        closed = os.dup(out.fileno())
    os.close(closed)
    with pytest.raises(OSError) as raised:
        sync_file_range(closed, 0, 1, SYNC_FILE_RANGE_WRITE)
    assert raised.value.errno == errno.EBADF


def test_pread_into_fills_the_view_and_is_short_only_at_the_end_of_the_file(tmp_path: Path):
    path = tmp_path / "data"
    data = os.urandom(10000)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        buffer = bytearray(4096)
        assert pread_into(fd, memoryview(buffer), 100) == 4096 and buffer == data[100:4196]
        assert pread_into(fd, memoryview(buffer), 8000) == 2000 and buffer[:2000] == data[8000:]
    finally:
        os.close(fd)
