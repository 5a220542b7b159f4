"""HTTP/1.1 over a unix socket: a small server and client, thin trio adapters around h11.

h11 owns the protocol (bytes in, events out); this module only moves bytes between a trio socket
stream and an h11.Connection, as h11's own TrioHTTPWrapper does. Daemons serve their local APIs
with `serve_unix`; the CLI, the snapshotter and the tests call them with `request`.

Rules:
- Rule 1 (bounded waits): each request must arrive whole within `read_timeout` seconds of its
  first byte being awaited (one deadline per request, not per read, so a trickling client cannot
  hold a connection forever), and each response must be sent within the same time. An idle
  keep-alive connection is closed silently; a half-sent request gets 408 and is closed.
- Rule 2 (bad requests): a request h11 rejects gets its status hint (400, 413, 431) and the
  connection is closed; a body over `max_body` gets 413.
- Rule 3 (handler errors): the handler maps its own errors to statuses. Anything it lets escape is
  logged and answered with 500; one connection's failure never ends the server.
- Rule 4 (keep-alive): a connection serves requests until either side asks to close, a timeout, or
  an error.
- Rule 5 (socket file): `serve_unix` replaces a stale socket at `path` (never another kind of
  file), makes it owner-only (0600), and removes it when the server stops.
- Rule 6 (client): `request` is one connection per call (`Connection: close`); a daemon that is
  not there raises Unavailable, one that breaks HTTP raises RemoteProtocolError. Like every core
  call it takes no timeout (STYLE 7): callers wrap it in `trio.fail_after`, and a caller-facing
  wrapper turns trio.TooSlowError into Unavailable.
"""

import contextlib
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import h11
import trio

from lazyfly.errors import InvalidArgument, RemoteProtocolError, Unavailable

log = logging.getLogger(__name__)

Headers = list[tuple[str, str]]
Handler = Callable[[str, str, Headers, bytes], Awaitable[tuple[int, Headers, bytes]]]

DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_MAX_BODY = 1 << 20
MAX_HEADER_BYTES = 64 << 10
RECEIVE_SIZE = 64 << 10
SERVER_NAME = "lazyfly"


class _ClientGone(Exception):
    """The peer closed its side in the middle of a request."""


class _BodyTooLarge(Exception):
    """The request body is larger than the server accepts."""


async def serve_unix(
    path: Path,
    handler: Handler,
    *,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_body: int = DEFAULT_MAX_BODY,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP on the unix socket `path` with `handler` until cancelled (ready when started)."""
    _remove_stale_socket(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(128)
        listener = trio.SocketListener(sock)
    except BaseException:
        sock.close()
        _remove_socket(path)
        raise
    try:
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(_serve_connection, stream, handler, read_timeout, max_body)
    finally:
        _remove_socket(path)


def _remove_socket(path: Path) -> None:
    # Synchronous on purpose: it runs in `finally` under cancellation, where an await would not.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _remove_stale_socket(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise InvalidArgument(f"API socket {path} exists and is not a socket: refusing to replace it")
    path.unlink()


async def _serve_connection(
    stream: trio.abc.Stream, handler: Handler, read_timeout: float, max_body: int
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    async with stream:
        while True:
            try:
                with trio.fail_after(read_timeout):
                    request, body = await _read_request(stream, conn, max_body)
            except trio.TooSlowError:
                idle = conn.their_state is h11.IDLE and not conn.trailing_data[0]
                if not idle:
                    with trio.move_on_after(read_timeout):
                        await _send_simple(stream, conn, 408, "request not received in time")
                return
            except h11.RemoteProtocolError as exc:
                with trio.move_on_after(read_timeout):
                    await _send_simple(stream, conn, exc.error_status_hint, f"bad request: {exc}")
                return
            except _BodyTooLarge:
                with trio.move_on_after(read_timeout):
                    await _send_simple(stream, conn, 413, f"body larger than {max_body} bytes")
                return
            except (_ClientGone, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if request is None:
                return  # the client closed the connection between requests
            try:
                status, headers, payload = await handler(
                    request.method.decode("ascii"),
                    request.target.decode("ascii"),
                    [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers],
                    body,
                )
            except Exception:
                log.exception("API handler failed on %s %s", request.method, request.target)
                with trio.move_on_after(read_timeout):
                    await _send_simple(stream, conn, 500, "internal error")
                return
            with trio.move_on_after(read_timeout) as sending:
                sent = await _send_response(stream, conn, status, headers, payload)
            if sending.cancelled_caught or not sent:
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()


async def _read_request(
    stream: trio.abc.Stream, conn: h11.Connection, max_body: int
) -> tuple[h11.Request | None, bytes]:
    """Return the next request and its body, or (None, b"") when the client closed cleanly."""
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(RECEIVE_SIZE)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
            length = dict(event.headers).get(b"content-length")
            if length is not None and int(length) > max_body:
                raise _BodyTooLarge
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                raise _BodyTooLarge
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            if request is None and conn.their_state is h11.CLOSED:
                return None, b""
            raise _ClientGone  # closed mid-request: nobody to answer
        elif event is h11.PAUSED:
            return None, b""  # cannot happen while our own response is not sent; close defensively


async def _send_response(
    stream: trio.abc.Stream, conn: h11.Connection, status: int, headers: Headers, body: bytes
) -> bool:
    """Send one response; False if the peer went away (the caller bounds the time)."""
    all_headers = [("Server", SERVER_NAME), ("Content-Length", str(len(body))), *headers]
    try:
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=all_headers)))
        if body:
            await stream.send_all(conn.send(h11.Data(data=body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


async def _send_simple(stream: trio.abc.Stream, conn: h11.Connection, status: int, message: str) -> None:
    """Send a JSON error and close, if the connection can still take a response."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = json.dumps({"error": "HTTP", "message": message}).encode()
    headers = [("Content-Type", "application/json"), ("Connection", "close")]
    try:
        await _send_response(stream, conn, status, headers, body)
    except h11.LocalProtocolError:
        pass  # h11 refuses a response in this state: closing is all that is left


async def request(path: Path | str, method: str, target: str, json_body: object = None) -> tuple[int, bytes]:
    """Send one request to the server on unix socket `path`; return (status, body) (Rule 6).

    `json_body` is encoded as JSON unless it is bytes, which are sent as they are. Wrap the call
    in `trio.fail_after` (DEFAULT_REQUEST_TIMEOUT when in doubt).
    """
    if json_body is None or isinstance(json_body, bytes):
        body = json_body or b""
    else:
        body = json.dumps(json_body).encode()
    headers = [("Host", "localhost"), ("Connection", "close"), ("Content-Length", str(len(body)))]
    if json_body is not None:
        headers.append(("Content-Type", "application/json"))
    conn = h11.Connection(h11.CLIENT)
    try:
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(conn.send(h11.Request(method=method, target=target, headers=headers)))
            if body:
                await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            return await _read_response(stream, conn)
    except h11.RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{method} {target} on {path}: broken HTTP response: {exc}") from exc
    except (OSError, trio.BrokenResourceError) as exc:
        raise Unavailable(f"{method} {target} on {path}: {exc}") from exc


async def _read_response(stream: trio.abc.Stream, conn: h11.Connection) -> tuple[int, bytes]:
    status: int | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert status is not None  # h11 delivers the Response first
            return status, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("connection closed before the response ended")
