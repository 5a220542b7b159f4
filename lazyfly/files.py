"""File helpers: writing a file so that it appears whole or not at all; reading into a buffer whole;
sync_file_range(2), which Python's os module lacks."""

import ctypes
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, temp_prefix: str | None = None) -> None:
    """Write `data` to `path` through a temp file beside it (named `temp_prefix`…, by default
    `.NAME.`…), fsync'd, made 0644 and renamed over `path`; the temp file never outlives a failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix or f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes 0600; these files are read by other tools and users
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)


def pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill `view` from `offset` of file `fd`; return how many bytes it got (fewer only at the
    file's end)."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            break
        done += got
    return done


SYNC_FILE_RANGE_WAIT_BEFORE = 1  # wait for the writeback of the range already under way
SYNC_FILE_RANGE_WRITE = 2  # start the writeback of the range's dirty pages, without waiting
_libc = ctypes.CDLL(None, use_errno=True)
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def sync_file_range(fd: int, offset: int, length: int, flags: int) -> None:
    """sync_file_range(2) on `length` bytes of file `fd` from `offset`; raises OSError."""
    if _libc.sync_file_range(fd, offset, length, flags) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
