"""ThreadedTransport: an httpx transport running each HTTP/1.1 exchange on a blocking socket in a thread.

Why it exists: httpx's default transport (httpcore and h11 on the event loop) reads a body 64 KiB
at a time through several Python layers and then joins the pieces. Against a registry on loopback
that caps blob range reads at 100–250 MB/s whatever their size or number, while the same socket
delivers about 1 GB/s. Here the request head is written and the response head parsed by h11 (the
protocol core), but a body of known length is read by one system call into one `bytes` object, in
a worker thread: no Python per 64 KiB, no join, and the GIL is free while the kernel copies.

Rules:
- Rule 1 (what stays in httpx): auth flows, redirects, cookies and environment proxies (httpx
  mounts its own transports for those) stay in httpx and RegistryClient. This transport turns one
  request into one response and fails with httpx's transport errors (ConnectError, ConnectTimeout,
  ReadError, ReadTimeout, WriteError, WriteTimeout, RemoteProtocolError), as httpcore does.
- Rule 2 (framing): a response with a Content-Length of at most `buffer_limit` is read whole by
  the thread that sent the request (one thread hop per exchange). Other bodies (longer, chunked,
  or delimited by the connection's close) are streamed through h11, one thread hop per piece.
  Responses to HEAD, and 1xx, 204 and 304 answers, have no body, whatever their headers say.
- Rule 3 (zero copy on plain sockets): the response head is found with MSG_PEEK and consumed
  exactly, so the body starts at the socket's next byte and `recv(n, MSG_WAITALL)` returns it as
  one object. Over TLS (no MSG_PEEK) the head is read with what follows it, and the body is
  assembled in a buffer and copied once.
- Rule 4 (pool): idle keep-alive connections are kept per (scheme, host, port), the most recent
  first, at most `max_idle` per origin. A connection goes back only after its response was read
  to the end and neither side asked to close. A request on a reused connection that fails before
  the first byte of an answer is sent once more on a new connection (the server had closed it),
  and the origin's other idle connections are closed as probably stale too.
- Rule 5 (timeouts and cancellation): the request's httpx timeouts bound the connect, and each
  send and receive (kernel socket timeouts, so that MSG_WAITALL keeps working). A caller that is
  cancelled (its `fail_after`) shuts the socket down: the worker thread returns at once, and the
  connection is closed by that thread, never pooled. A connect cannot be interrupted that way,
  so it is always bounded (by UNBOUNDED_CONNECT_TIMEOUT when the request sets none).
- Rule 6 (range sinks): a request with a RangeSink in its SINK_EXTENSION whose answer is a 206 on
  a plain socket, with a Content-Length equal to the sink's length, has its body delivered into
  the sink in that thread, piece after piece received into the sink's buffer (range_sink.py), and
  returns an empty body with the response extension SINK_EXTENSION set to True. Any other answer
  (an error status, a 200, TLS) is returned as usual and the caller feeds the sink itself.
- Rule 7 (TLS): https uses httpx's default SSL context (made once, on the first https request)
  with SNI and certificate checks, like httpx.AsyncClient(verify=True).

The bytes on one socket (Rules 3, 5 and 6 at that level: peeking the head, reading a body whole
or into a sink, kernel timeouts, socket errors as httpx errors) are blocking_connection.py's.
"""

import socket
import ssl
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import h11
import httpx

from lazyfly.backend.blocking_connection import (
    HEAD_LIMIT,
    Connection,
    NotAnswered,
    Timeouts,
    deliver,
    read_exact,
    read_head_bytes,
    recv_some,
    set_timeouts,
    shutdown,
    write_error,
)
from lazyfly.range_sink import SINK_EXTENSION, RangeSink, range_length

DEFAULT_BUFFER_LIMIT = 64 << 20  # bodies up to this size are read in one thread hop
DEFAULT_MAX_IDLE = 16  # idle connections kept per origin
UNBOUNDED_CONNECT_TIMEOUT = 60.0  # a connect the request left unbounded (a cancel cannot stop one)
STREAM_PIECE = 1 << 20  # bytes read per thread hop of a streamed body
_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_NO_BODY_STATUSES = (204, 304)

Origin = tuple[bytes, str, int]  # scheme, host, port
# status, reason, headers, body read whole, body to stream, whether the body went into a RangeSink
_Answer = tuple[int, bytes, list[tuple[bytes, bytes]], bytes, "_StreamedBody | None", bool]


@dataclass
class _Exchange:
    """The socket of one exchange as a worker thread uses it, so that a cancelled caller can abort it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: Connection | None = None
    aborted: bool = False
    finished: bool = False

    def attach(self, conn: Connection) -> None:
        """Worker thread: this exchange now runs on `conn` (shut down at once if already aborted)."""
        with self.lock:
            self.conn = conn
            if self.aborted:
                shutdown(conn.sock)

    def finish(self) -> bool:
        """Worker thread: the exchange is over; False if the caller aborted it (the socket is dead)."""
        with self.lock:
            self.finished = True
            return not self.aborted

    def abort(self) -> None:
        """Event loop: the caller gave up; wake the worker thread out of any blocking call."""
        with self.lock:
            self.aborted = True
            if self.conn is not None and not self.finished:
                shutdown(self.conn.sock)


class ThreadedTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over blocking sockets in worker threads (see the module rules)."""

    def __init__(self, *, buffer_limit: int = DEFAULT_BUFFER_LIMIT, max_idle: int = DEFAULT_MAX_IDLE) -> None:
        self.buffer_limit = buffer_limit
        self.max_idle = max_idle
        self._idle: dict[Origin, list[Connection]] = {}
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return its response (the body whole, or streamed: Rule 2)."""
        scheme = request.url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"ThreadedTransport cannot send {scheme!r} requests")
        origin = (scheme, request.url.host, request.url.port or _DEFAULT_PORTS[scheme])
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        if scheme == b"https" and self._ssl is None:
            self._ssl = await anyio.to_thread.run_sync(httpx.create_ssl_context)
        exchange = _Exchange()
        result = await _in_thread(exchange, self._exchange, exchange, origin, request, body)
        status, reason, headers, content, stream, delivered = result
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": reason, SINK_EXTENSION: delivered}
        body_stream = stream if stream is not None else httpx.ByteStream(content)
        return httpx.Response(status, headers=headers, stream=body_stream, extensions=extensions)

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their exchange ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # --- the worker thread's side ----------------------------------------------------------------

    def _exchange(self, exchange: _Exchange, origin: Origin, request: httpx.Request, body: bytes) -> _Answer:
        timeouts = Timeouts.of(request)
        fresh = False
        while True:
            conn = self._checkout(origin, timeouts, fresh=fresh)
            exchange.attach(conn)
            try:
                return self._send_and_receive(exchange, conn, origin, request, body, timeouts)
            except NotAnswered:
                conn.close()
                if fresh:
                    raise httpx.ReadError(f"{origin[1]}:{origin[2]} hung up unanswered") from None
                fresh = True  # Rule 4: once more, on a new connection; the idle ones are stale too
                self._drop_idle(origin)
            except BaseException:
                conn.close()
                raise

    def _send_and_receive(
        self,
        exchange: _Exchange,
        conn: Connection,
        origin: Origin,
        request: httpx.Request,
        body: bytes,
        timeouts: Timeouts,
    ) -> _Answer:
        protocol = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
        try:
            wire = protocol.send(
                h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw)
            )
            if body:
                wire += protocol.send(h11.Data(data=body))
            wire += protocol.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        try:
            conn.sock.sendall(wire)
        except OSError as exc:
            if conn.reused:
                raise NotAnswered from exc
            raise write_error(exc, timeouts) from exc
        response, leftover = self._read_response_head(conn, protocol, timeouts)
        headers = list(response.headers)
        length = _body_length(request.method, response)
        sink: RangeSink | None = request.extensions.get(SINK_EXTENSION)
        delivered = (
            sink is not None
            and response.status_code == 206
            and conn.plain
            and not leftover
            and length == range_length(sink)
        )
        if sink is not None and delivered:
            deliver(conn, sink, timeouts)
            content = b""
        elif length is not None and length <= self.buffer_limit:
            content = read_exact(conn, length, leftover, timeouts)
        else:
            stream = _StreamedBody(self, exchange, conn, origin, protocol, timeouts)
            return response.status_code, response.reason, headers, b"", stream, False
        if exchange.finish() and _keeps_alive(request, response):
            self._checkin(origin, conn)
        else:
            conn.close()
        return response.status_code, response.reason, headers, content, None, delivered

    def _read_response_head(
        self, conn: Connection, protocol: h11.Connection, timeouts: Timeouts
    ) -> tuple[h11.Response, bytes]:
        """Read up to the final response head (1xx skipped); return it and the bytes read after it."""
        received = False
        while True:
            try:
                event = protocol.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if isinstance(event, h11.Response):
                return event, protocol.trailing_data[0]
            if isinstance(event, h11.InformationalResponse):
                continue
            if event is not h11.NEED_DATA:
                raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} instead of a response")
            protocol.receive_data(read_head_bytes(conn, timeouts, answered=received))
            received = True

    def _checkout(self, origin: Origin, timeouts: Timeouts, *, fresh: bool) -> Connection:
        with self._lock:
            if self._closed:
                raise httpx.ConnectError("the transport is closed")
            idle = self._idle.get(origin)
            if idle and not fresh:
                conn = idle.pop()
                conn.reused = True
                set_timeouts(conn.sock, timeouts)
                return conn
        return self._connect(origin, timeouts)

    def _connect(self, origin: Origin, timeouts: Timeouts) -> Connection:
        scheme, host, port = origin
        try:
            timeout = timeouts.connect or UNBOUNDED_CONNECT_TIMEOUT
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connect to {host}:{port}: {exc}") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"connect to {host}:{port}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)  # blocking, bounded by kernel timeouts (Rule 5)
            set_timeouts(sock, timeouts)
            if scheme == b"https":
                assert self._ssl is not None
                try:
                    sock = self._ssl.wrap_socket(sock, server_hostname=host)
                except (OSError, ssl.SSLError) as exc:
                    raise httpx.ConnectError(f"TLS with {host}:{port}: {exc}") from exc
        except BaseException:
            sock.close()
            raise
        return Connection(sock, plain=scheme == b"http")

    def _drop_idle(self, origin: Origin) -> None:
        with self._lock:
            idle = self._idle.pop(origin, [])
        for conn in idle:
            conn.close()

    def _checkin(self, origin: Origin, conn: Connection) -> None:
        conn.reused = False
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if not self._closed and len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()


class _StreamedBody(httpx.AsyncByteStream):
    """A body read through h11 one piece per thread hop (Rule 2); its connection is pooled at the end."""

    def __init__(
        self,
        transport: ThreadedTransport,
        exchange: _Exchange,
        conn: Connection,
        origin: Origin,
        protocol: h11.Connection,
        timeouts: Timeouts,
    ) -> None:
        self._transport = transport
        self._exchange = exchange
        self._conn = conn
        self._origin = origin
        self._protocol = protocol
        self._timeouts = timeouts
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self._done:
            pieces = await _in_thread(self._exchange, self._next_pieces)
            for piece in pieces:
                yield piece

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._exchange.finish()
            self._conn.close()

    def _next_pieces(self) -> list[bytes]:
        """Worker thread: the body bytes h11 can give now, reading the socket when it needs more."""
        pieces: list[bytes] = []
        try:
            while True:
                event = self._protocol.next_event()
                if event is h11.NEED_DATA:
                    if pieces:
                        return pieces
                    self._protocol.receive_data(recv_some(self._conn, STREAM_PIECE, self._timeouts))
                elif isinstance(event, h11.Data):
                    pieces.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    self._end()
                    return pieces
                else:
                    raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} in a response body")
        except h11.RemoteProtocolError as exc:
            self._done = True
            self._conn.close()
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except BaseException:
            self._done = True
            self._conn.close()
            raise

    def _end(self) -> None:
        self._done = True
        reusable = self._protocol.our_state is h11.DONE and self._protocol.their_state is h11.DONE
        if self._exchange.finish() and reusable:
            self._transport._checkin(self._origin, self._conn)
        else:
            self._conn.close()


async def _in_thread(exchange: _Exchange, func, *args):  # type: ignore[no-untyped-def]
    """Run `func` in a worker thread; if the caller is cancelled, abort the exchange (Rule 5)."""
    try:
        return await anyio.to_thread.run_sync(func, *args, abandon_on_cancel=True)
    except BaseException:
        exchange.abort()  # no-op when the thread finished; else its socket call returns at once
        raise


def _body_length(method: str, response: h11.Response) -> int | None:
    """The body's length when it is known from the head (Rule 2), else None (stream it)."""
    if method == "HEAD" or response.status_code in _NO_BODY_STATUSES or response.status_code < 200:
        return 0
    length = None
    for name, value in response.headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            length = int(value)  # h11 checked it is one decimal number
    return length


def _keeps_alive(request: httpx.Request, response: h11.Response) -> bool:
    if response.http_version != b"1.1":
        return False
    for headers in (request.headers.raw, response.headers):
        for name, value in headers:
            if name.lower() == b"connection" and b"close" in value.lower():
                return False
    return True
