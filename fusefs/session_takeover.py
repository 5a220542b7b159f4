"""Keep a FUSE connection alive across a daemon's death, and take it over in the next daemon.

While a daemon runs it hands a duplicate of its /dev/fuse descriptor to anyone who connects to its
session socket (`lazyfly.api.fusefs.session_socket_path`, owner-only): the supervisor holds it, so
that when the daemon dies the kernel keeps the mount and queues its requests instead of failing
them. The next daemon inherits that descriptor (`lazyfly fusefs --takeover-fd N`) and serves the
same connection: overlays and open files built on the mount keep working.

libfuse cannot start on an initialised connection, so the new daemon's libfuse is given one end of
a SOCK_SEQPACKET pair instead of /dev/fuse (`/dev/fd/N`, which libfuse accepts as an already
mounted session); a FUSE_INIT made by fuse_wire is fed to it and its answer dropped; then
FUSE_NOTIFY_RESEND makes the kernel queue again what the dead daemon had read but not answered,
and `relay` moves every message between the real descriptor and the pair, one datagram each.

Rules:
- Rule 1: inode numbers and file handles must mean the same to both daemons: images are restored
  in their old slots before the relay forwards the first request, and handles are inode numbers.
- Rule 2: the relay ends when the kernel says the mount is gone (ENODEV) or libfuse closes its
  end; either way the daemon stops as if unmounted.
- Rule 3: this module never mounts or unmounts; the daemon does.
"""

import array
import contextlib
import errno
import logging
import os
import socket
from pathlib import Path

import pyfuse3
import trio

from lazyfly.fusefs import fuse_wire

log = logging.getLogger(__name__)

MESSAGE_MAX = (1 << 20) + (64 << 10)  # the largest request or answer with 256 pages and headers
SOCKET_BUFFER = 8 << 20
INIT_UNIQUE = 1 << 62  # no kernel request uses this unique
DEFAULT_INIT_TIMEOUT = 10.0
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux (asm-generic/socket.h); the socket module lacks them


def find_session_fd() -> int:
    """The descriptor of this process's /dev/fuse session (pyfuse3 keeps one, and does not expose it)."""
    found = [int(fd) for fd in os.listdir("/proc/self/fd") if _target(fd) == "/dev/fuse"]
    if len(found) != 1:
        raise RuntimeError(f"expected one /dev/fuse descriptor in this process, found {found}")
    return found[0]


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


async def serve_session_fd(
    path: Path, session_fd: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Hand `session_fd` to every client of the unix socket at `path` until cancelled."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        await listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(8)
        task_status.started()
        try:
            while True:
                client, _ = await listener.accept()
                with client, trio.move_on_after(DEFAULT_INIT_TIMEOUT):
                    fds = array.array("i", [session_fd])
                    await client.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def takeover_pair() -> tuple[socket.socket, socket.socket]:
    """(libfuse's end, the relay's end) of the datagram pair that stands in for /dev/fuse."""
    libfuse_end, relay_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (libfuse_end, relay_end):
        for option in (SO_SNDBUFFORCE, SO_RCVBUFFORCE):
            end.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    libfuse_end.set_inheritable(False)
    return libfuse_end, relay_end


async def relay(
    session_fd: int,
    relay_end: socket.socket,
    max_readahead: int,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Initialise libfuse on its end, have the kernel resend, then relay until the mount ends."""
    pair = trio.socket.from_stdlib_socket(relay_end)
    with pair:
        with trio.fail_after(DEFAULT_INIT_TIMEOUT):
            await pair.send(fuse_wire.init_request(INIT_UNIQUE, max_readahead))
            fuse_wire.check_init_reply(await pair.recv(MESSAGE_MAX), INIT_UNIQUE)
        os.set_blocking(session_fd, False)
        try:
            os.write(session_fd, fuse_wire.notify_resend())
        except OSError as exc:  # before Linux 6.9: requests the dead daemon held stay unanswered
            log.warning("the kernel did not take FUSE_NOTIFY_RESEND: %s", exc)
        task_status.started()
        log.info("took over the FUSE session on descriptor %d", session_fd)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_requests, session_fd, pair, nursery.cancel_scope)
            nursery.start_soon(_answers, pair, session_fd, nursery.cancel_scope)
    pyfuse3.terminate()


async def _requests(session_fd: int, pair: trio.socket.SocketType, done: trio.CancelScope) -> None:
    while True:
        await trio.lowlevel.wait_readable(session_fd)
        try:
            message = os.read(session_fd, MESSAGE_MAX)
        except BlockingIOError:
            continue
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            if exc.errno == errno.ENOENT:  # the request was interrupted before we read it
                continue
            log.info("FUSE session ended: %s", exc)
            done.cancel()
            return
        await pair.send(message)


async def _answers(pair: trio.socket.SocketType, session_fd: int, done: trio.CancelScope) -> None:
    while True:
        message = await pair.recv(MESSAGE_MAX)
        if not message:
            done.cancel()
            return
        try:
            os.write(session_fd, message)
        except OSError as exc:
            # ENOENT: the kernel gave up on that request (interrupted); anything else ends the mount
            if exc.errno != errno.ENOENT:
                log.info("FUSE session ended: %s", exc)
                done.cancel()
                return
