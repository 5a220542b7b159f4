"""Mountpoint housekeeping: is it mounted, is it a dead FUSE mount, mount-wait and unmount.

A FUSE daemon killed with SIGKILL leaves its mount behind: every access then fails with ENOTCONN
("Transport endpoint is not connected") or ECONNABORTED and hangs nothing, but blocks a new mount
on the same path. Rules: mount state is read from /proc/self/mountinfo, never by stat() (which is what fails);
a dead mount is detached lazily (`umount -l`), which never blocks on the dead daemon; liveness
is probed with statfs, which the kernel never answers from its attribute cache.
"""

import errno
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lazyfly.fusefs.errors import MountFailed
from lazyfly.mountinfo import mount_entry, mount_fields

READ_AHEAD_WAIT = 2.0  # how long `wait_until_mounted` waits for the daemon to widen read-ahead


def _read_ahead_path(path: Path) -> Path:
    fields = mount_fields(path)
    if fields is None:
        raise MountFailed(f"nothing is mounted at {path}")
    return Path(f"/sys/class/bdi/{fields[2]}/read_ahead_kb")


def get_read_ahead(path: Path) -> int:
    """The kernel's read-ahead window (KiB) of the mount at `path`."""
    return int(_read_ahead_path(path).read_text())


def set_read_ahead(path: Path, kib: int) -> None:
    """Set the kernel's read-ahead window of the mount at `path` (its backing-device info).

    FUSE mounts start with 128 KiB, which caps sequential reads at 128 KiB requests; a larger
    window lets the kernel ask for whole chunks. Read from mountinfo: stat() would ask the daemon,
    which may not be serving yet.
    """
    _read_ahead_path(path).write_text(str(kib))


def is_dead(path: Path) -> bool:
    """True when a FUSE mount sits at `path` but its daemon is gone."""
    entry = mount_entry(path)
    if entry is None or not entry[0].startswith("fuse"):
        return False
    try:
        os.statvfs(path)  # statfs always reaches the daemon; stat may be answered from cache
    except OSError as exc:
        return exc.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False


def unmount(path: Path, *, lazy: bool = False) -> None:
    """Unmount `path`; `lazy` detaches it even if busy or dead."""
    argv = ["umount", "-l", str(path)] if lazy else ["umount", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0 and mount_entry(path) is not None:
        raise MountFailed(f"cannot unmount {path}: {result.stderr.strip()}")


def recover(path: Path) -> bool:
    """Detach a dead FUSE mount at `path`; return True if there was one."""
    if is_dead(path):
        unmount(path, lazy=True)
        return True
    return False


def wait_until_mounted(
    path: Path,
    fstype_prefix: str,
    alive: Callable[[], bool],
    timeout: float,
    read_ahead_kb: int | None = None,
) -> None:
    """Return once a `fstype_prefix` mount at `path` answers stat (and, if `read_ahead_kb` is given,
    has that read-ahead, or READ_AHEAD_WAIT passed); raise if `alive()` turns False.

    The read-ahead is waited for because a file takes the mount's read-ahead when it is opened:
    a reader that opened a file before the daemon widened it would read in 128 KiB requests
    to the end.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = mount_entry(path)
        if entry is not None and entry[0].startswith(fstype_prefix):
            try:
                os.stat(path)
            except OSError:
                pass
            else:
                if read_ahead_kb is not None:
                    until = min(deadline, time.monotonic() + READ_AHEAD_WAIT)
                    _wait_for_read_ahead(path, read_ahead_kb, until)
                return
        if not alive():
            raise MountFailed(f"the daemon for {path} exited before the mount answered")
        time.sleep(0.05)
    raise MountFailed(f"{path} did not answer within {timeout} s")


def _wait_for_read_ahead(path: Path, kib: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if get_read_ahead(path) >= kib:
                return
        except (OSError, ValueError, MountFailed):
            return  # no sysfs entry to watch: the daemon logs why it could not set it
        time.sleep(0.01)
