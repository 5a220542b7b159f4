"""One HTTP/1.1 connection on a blocking socket, as a worker thread of ThreadedTransport uses it.

threaded_transport.py owns the exchange (h11 events, the pool, threads and cancellation); this
module owns the bytes on one socket: its kernel timeouts, the reads of an answer's head and body,
and the mapping of socket errors to httpx's transport errors (threaded_transport.py, Rule 1).

Rules (numbers refer to threaded_transport.py):
- Rule 3 (zero copy on plain sockets): `read_head_bytes` finds the head's end with MSG_PEEK and
  consumes exactly the head, so the body starts at the socket's next byte; `read_exact` then takes
  a body as one `recv(n, MSG_WAITALL)` object. Over TLS (no MSG_PEEK) the head comes with what
  follows it, and the body is assembled in a buffer and copied once.
- Rule 4 (stale connections): a reused connection that ends or is reset before the first byte of
  an answer raises NotAnswered, so the exchange is sent again on a new connection.
- Rule 5 (timeouts): each send and receive is bounded by the kernel socket timeouts
  (SO_RCVTIMEO, SO_SNDTIMEO) set from the request's httpx timeouts, so MSG_WAITALL keeps working.
- Rule 6 (range sinks): `deliver` receives a body piece by piece into a RangeSink's buffer and
  hands each piece over before receiving the next.
"""

import socket
import sys
from dataclasses import dataclass

import httpx

from lazyfly.range_sink import RangeSink

HEAD_LIMIT = 64 << 10  # the longest response head accepted


class NotAnswered(Exception):
    """A reused connection failed before the first byte of the answer: send again on a new one."""


@dataclass
class Timeouts:
    """The httpx timeouts of one request."""

    connect: float | None
    read: float | None
    write: float | None

    @classmethod
    def of(cls, request: httpx.Request) -> "Timeouts":
        t = request.extensions.get("timeout", {})
        return cls(t.get("connect"), t.get("read"), t.get("write"))


@dataclass
class Connection:
    """One open socket to an origin (`plain` when not TLS)."""

    sock: socket.socket
    plain: bool
    reused: bool = False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def shutdown(sock: socket.socket) -> None:
    """Wake every thread blocked on `sock` (a cancelled exchange)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def set_timeouts(sock: socket.socket, timeouts: Timeouts) -> None:
    """Bound each send and receive on `sock` by the request's timeouts (Rule 5)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeouts.read))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeouts.write))


def read_error(exc: OSError, timeouts: Timeouts) -> httpx.TransportError:
    """The httpx error of a failed receive."""
    if isinstance(exc, BlockingIOError | TimeoutError):
        return httpx.ReadTimeout(f"no data within {timeouts.read} s")
    return httpx.ReadError(f"{type(exc).__name__}: {exc}")


def write_error(exc: OSError, timeouts: Timeouts) -> httpx.TransportError:
    """The httpx error of a failed send."""
    if isinstance(exc, BlockingIOError | TimeoutError):
        return httpx.WriteTimeout(f"could not send within {timeouts.write} s")
    return httpx.WriteError(f"{type(exc).__name__}: {exc}")


def read_head_bytes(conn: Connection, timeouts: Timeouts, *, answered: bool) -> bytes:
    """Bytes of the response head: exactly one head on a plain socket (Rule 3), else what arrived.

    `answered` says whether earlier bytes of this answer arrived; a reused connection that ends
    before any is NotAnswered (Rule 4).
    """
    try:
        data = _peek_head(conn) if conn.plain else conn.sock.recv(HEAD_LIMIT)
    except (ConnectionResetError, BrokenPipeError) as exc:
        if conn.reused and not answered:
            raise NotAnswered from exc
        raise read_error(exc, timeouts) from exc
    except OSError as exc:
        raise read_error(exc, timeouts) from exc
    if not data:
        if conn.reused and not answered:
            raise NotAnswered
        raise httpx.RemoteProtocolError("the server closed the connection before the end of a response head")
    return data


def read_exact(conn: Connection, length: int, leftover: bytes, timeouts: Timeouts) -> bytes:
    """Read a body of exactly `length` bytes (`leftover` already read); one object when plain."""
    if len(leftover) > length:
        raise httpx.RemoteProtocolError(f"{len(leftover) - length} bytes after a {length}-byte body")
    if not leftover and conn.plain and length:
        try:
            first = conn.sock.recv(length, socket.MSG_WAITALL)
        except OSError as exc:
            raise read_error(exc, timeouts) from exc
        if len(first) == length:
            return first
        leftover = first
    body = bytearray(length)
    body[: len(leftover)] = leftover
    _recv_into(conn, memoryview(body)[len(leftover) :], timeouts, f"a {length}-byte body")
    return bytes(body)


def deliver(conn: Connection, sink: RangeSink, timeouts: Timeouts) -> None:
    """Receive a body piece by piece into the sink's buffer and hand each piece over (Rule 6)."""
    buffer = memoryview(sink.buffer)
    sink.restart()
    for size in sink.piece_sizes:
        piece = buffer[:size]
        _recv_into(conn, piece, timeouts, "a range piece")
        sink.take(piece)


def recv_some(conn: Connection, limit: int, timeouts: Timeouts) -> bytes:
    """What the socket has now, at most `limit` bytes (b"" when the server closed)."""
    try:
        return conn.sock.recv(limit)
    except OSError as exc:
        raise read_error(exc, timeouts) from exc


def _recv_into(conn: Connection, view: memoryview, timeouts: Timeouts, what: str) -> None:
    """Fill `view` from the socket; the server closing first is a protocol error naming `what`."""
    flags = socket.MSG_WAITALL if conn.plain else 0  # an SSL socket takes no flags
    got = 0
    try:
        while got < len(view):
            n = conn.sock.recv_into(view[got:], len(view) - got, flags)
            if n == 0:
                raise httpx.RemoteProtocolError(f"connection closed {len(view) - got} bytes short of {what}")
            got += n
    except OSError as exc:
        raise read_error(exc, timeouts) from exc


def _peek_head(conn: Connection) -> bytes:
    """Plain socket: find the head's end with MSG_PEEK, then consume exactly the head (Rule 3).

    Returns b"" when the connection ends before a whole head arrived.
    """
    seen = 0
    while True:
        # Wait until more than was seen last time has arrived (MSG_WAITALL), then look at it all.
        if len(conn.sock.recv(seen + 1, socket.MSG_PEEK | socket.MSG_WAITALL)) <= seen:
            return b""
        peek = conn.sock.recv(HEAD_LIMIT, socket.MSG_PEEK)
        end = peek.find(b"\r\n\r\n")
        if end >= 0:
            head = conn.sock.recv(end + 4, socket.MSG_WAITALL)
            if len(head) != end + 4:
                raise httpx.RemoteProtocolError("a response head shrank between peek and read")
            return head
        if len(peek) >= HEAD_LIMIT:
            raise httpx.RemoteProtocolError(f"a response head longer than {HEAD_LIMIT} bytes")
        seen = len(peek)


def _timeval(seconds: float | None) -> bytes:
    """The `struct timeval` of a kernel socket timeout (64-bit Linux); 0 means none."""
    if seconds is None:
        seconds = 0.0
    sec = int(seconds)
    usec = int((seconds - sec) * 1e6)
    if seconds > 0 and sec == 0 and usec == 0:
        usec = 1
    return sec.to_bytes(8, sys.byteorder, signed=True) + usec.to_bytes(8, sys.byteorder, signed=True)
