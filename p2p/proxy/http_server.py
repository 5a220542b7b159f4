"""The proxy's HTTP/1.1 server: a thin anyio adapter around h11 that streams response bodies.

h11 owns the protocol; this module moves bytes between anyio socket streams and an h11.Connection,
as lazyfly.http_unix does on trio, but on TCP, with response bodies streamed from async iterators,
and with CONNECT handed to tunnel.py. Request bodies are read whole (proxied ones are small).

Rules:
- Rule 1 (bounded waits): each request must arrive whole within `read_timeout` of the wait for it
  starting (one deadline per request, so a trickling client cannot hold a connection). An idle
  keep-alive connection is closed silently, a half-sent one gets 408. Each chunk sent may stall at
  most DEFAULT_SEND_TIMEOUT. The handler bounds its own waits (its downloads, its body).
- Rule 2 (bad requests): a request h11 rejects gets h11's status hint (400, 431) and the connection
  is closed; a body over DEFAULT_MAX_BODY gets 413. Every error the server makes up carries
  `X-Dragonfly-Error-Type: proxy`.
- Rule 3 (handler errors): what the handler lets escape is logged. If no byte of the answer was sent
  it is answered 500; otherwise the connection is closed, so the client sees a truncated body, never
  a short one that looks complete. The head goes out with the first body chunk, so an iterator that
  fails before yielding still gets a 500. A body that does not match the handler's Content-Length is
  refused by h11 and likewise ends the connection.
- Rule 4 (framing): a bytes body gets a Content-Length; an iterator body without one is sent chunked
  (h11 falls back to close-delimited for an HTTP/1.0 client). HEAD answers carry no body.
- Rule 5 (cleanup): while an iterator body is sent the client is watched; a client that hangs up
  cancels the iterator (as Go's net/http cancels a request's context). However the body ends, the
  iterator is closed and then `close` awaited, shielded from cancellation.
- Rule 6 (keep-alive): a connection serves requests until either side asks to close, a timeout or
  an error. CONNECT hands the connection to tunnel.py for good.
- Rule 7 (ownership): every connection is a task of the server's task group; neither a connection's
  failure nor running out of descriptors ends the server (accept waits and retries, as trio's
  serve_listeners does; anyio's Listener.serve would end on it).
"""

import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import anyio.abc
import h11

from lazyfly.p2p.proxy.headers import ERROR_TYPE, ERROR_TYPE_PROXY
from lazyfly.p2p.proxy.tunnel import TunnelRefused, tunnel

log = logging.getLogger(__name__)

Headers = list[tuple[str, str]]

DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_SEND_TIMEOUT = 60.0
DEFAULT_CLOSE_TIMEOUT = 10.0
DEFAULT_MAX_BODY = 64 << 20
MAX_HEADER_BYTES = 64 << 10
RECEIVE_SIZE = 64 << 10
LISTEN_BACKLOG = 256
ACCEPT_RETRY_DELAY = 0.1
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.ECONNABORTED}
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


@dataclass
class ProxyRequest:
    """One request as the client sent it."""

    method: str
    target: str  # absolute-form "http://host/path" for proxy requests, or origin-form "/path"
    headers: Headers  # decoded, original case kept
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


@dataclass
class ProxyResponse:
    """What the handler answers; an iterator body is streamed as it yields (Rules 3–5)."""

    status: int
    headers: Headers
    body: bytes | AsyncIterator[bytes] = b""
    close: Callable[[], Awaitable[None]] | None = None  # awaited after the body is sent or abandoned


Handler = Callable[[ProxyRequest], Awaitable[ProxyResponse]]


def error_response(
    status: int, message: str, error_type: str = ERROR_TYPE_PROXY, headers: Sequence[tuple[str, str]] = ()
) -> ProxyResponse:
    """A plain-text error answer naming who failed in X-Dragonfly-Error-Type."""
    body = message.encode()
    return ProxyResponse(status, [*_error_headers(body, error_type), *headers], body)


def _error_headers(body: bytes, error_type: str) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        (ERROR_TYPE, error_type),
    ]


class _SendFailed(Exception):
    """The client stopped taking bytes (gone, or stalled past DEFAULT_SEND_TIMEOUT)."""


class _BodyTooLarge(Exception):
    """The request body is larger than DEFAULT_MAX_BODY."""


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> None:
    """Serve HTTP on host:port with `handler` until cancelled; report the bound port when listening."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, backlog=LISTEN_BACKLOG)
    async with listener, anyio.create_task_group() as tg:
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        log.info("proxy HTTP server on %s:%d", host, bound)
        for each in listener.listeners:
            tg.start_soon(_accept, each, tg, handler, read_timeout)
        task_status.started(bound)


async def _accept(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
    tg: anyio.abc.TaskGroup,
    handler: Handler,
    read_timeout: float,
) -> None:
    """Accept connections into `tg`; out of descriptors or memory, wait and retry (Rule 7)."""
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                raise
            log.warning("proxy: accept failed, retrying: %r", exc)
            await anyio.sleep(ACCEPT_RETRY_DELAY)
            continue
        tg.start_soon(_serve_connection, stream, handler, read_timeout)


async def _serve_connection(stream: anyio.abc.SocketStream, handler: Handler, read_timeout: float) -> None:
    async with stream:
        try:
            await _serve_requests(stream, handler, read_timeout)
        except Exception:
            log.exception("proxy: a connection failed")  # Rule 7: never the server


async def _serve_requests(stream: anyio.abc.SocketStream, handler: Handler, read_timeout: float) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    while True:
        try:
            with anyio.fail_after(read_timeout):
                request = await _read_request(stream, conn)
        except TimeoutError:
            if conn.their_state is not h11.IDLE or conn.trailing_data[0]:
                await _send_error(stream, conn, 408, "request not received in time")
            return
        except h11.RemoteProtocolError as exc:
            await _send_error(stream, conn, exc.error_status_hint, f"bad request: {exc}")
            return
        except _BodyTooLarge:
            await _send_error(stream, conn, 413, f"request body larger than {DEFAULT_MAX_BODY} bytes")
            return
        except (_SendFailed, *_GONE):
            return
        if request is None:
            return  # the client closed the connection between requests
        if request.method == "CONNECT":
            try:
                await tunnel(stream, conn, request.target)
            except TunnelRefused as exc:
                await _send_error(stream, conn, exc.status, str(exc))
            return
        if not await _respond(stream, conn, handler, request):
            return
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


async def _read_request(stream: anyio.abc.SocketStream, conn: h11.Connection) -> ProxyRequest | None:
    """The next request with its body, or None when the client closed cleanly between requests."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                await stream.send(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            try:
                data = await stream.receive(RECEIVE_SIZE)
            except anyio.EndOfStream:
                data = b""
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
            if int(dict(event.headers).get(b"content-length", b"0")) > DEFAULT_MAX_BODY:
                raise _BodyTooLarge
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > DEFAULT_MAX_BODY:
                raise _BodyTooLarge
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None  # h11 delivers the Request first
            return ProxyRequest(
                method=head.method.decode("ascii"),
                target=head.target.decode("latin-1"),
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers.raw_items()],
                body=bytes(body),
            )
        elif isinstance(event, h11.ConnectionClosed):
            if head is None and conn.their_state is h11.CLOSED:
                return None
            raise anyio.EndOfStream  # closed mid-request: nobody to answer
        else:
            return None  # PAUSED cannot happen before our answer; close defensively


async def _respond(
    stream: anyio.abc.SocketStream, conn: h11.Connection, handler: Handler, request: ProxyRequest
) -> bool:
    """Answer `request`; True if the whole answer went out (Rules 3–5)."""
    try:
        response = await handler(request)
    except Exception:
        log.exception("proxy: handler failed on %s %s", request.method, request.target)
        await _send_error(stream, conn, 500, "internal error")
        return False
    chunks = None if isinstance(response.body, bytes) or request.method == "HEAD" else response.body
    hung_up, sent = anyio.Event(), False
    try:
        async with anyio.create_task_group() as tg:
            if chunks is not None:
                tg.start_soon(_watch_for_hangup, stream, conn, hung_up, tg.cancel_scope)
            sent = await _send_response(stream, conn, request, response, chunks)
            tg.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(DEFAULT_CLOSE_TIMEOUT, shield=True):
            await _close(request, response)
    if hung_up.is_set():
        log.info("proxy: client hung up during %s %s", request.method, request.target)
    return sent and not hung_up.is_set()


async def _send_response(
    stream: anyio.abc.SocketStream,
    conn: h11.Connection,
    request: ProxyRequest,
    response: ProxyResponse,
    chunks: AsyncIterator[bytes] | None,
) -> bool:
    """Send the head with the first chunk, then the rest; False if the connection must close."""
    headers, first = list(response.headers), b""
    if isinstance(response.body, bytes) and request.method != "HEAD":
        first = response.body
        if response.status not in (204, 304) and not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(first))))
    try:
        if chunks is not None:
            first = await anext(chunks, b"")
        await _send(stream, conn, h11.Response(status_code=response.status, headers=headers))
        if first:
            await _send(stream, conn, h11.Data(data=first))
        if chunks is not None:
            async for chunk in chunks:
                if chunk:
                    await _send(stream, conn, h11.Data(data=chunk))
        await _send(stream, conn, h11.EndOfMessage())
    except _SendFailed as exc:
        log.info("proxy: answer to %s %s not sent: %r", request.method, request.target, exc.__cause__)
        return False
    except Exception:
        log.exception("proxy: answer to %s %s failed", request.method, request.target)
        await _send_error(stream, conn, 500, "internal error")
        return False
    return True


async def _send(stream: anyio.abc.SocketStream, conn: h11.Connection, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        try:
            with anyio.fail_after(DEFAULT_SEND_TIMEOUT):
                await stream.send(data)
        except (*_GONE, TimeoutError) as exc:
            raise _SendFailed from exc


async def _watch_for_hangup(
    stream: anyio.abc.SocketStream, conn: h11.Connection, hung_up: anyio.Event, scope: anyio.CancelScope
) -> None:
    """Cancel `scope` if the client closes while its answer is sent (Rule 5)."""
    try:
        data = await stream.receive(RECEIVE_SIZE)
    except _GONE:
        hung_up.set()
        scope.cancel()
        return
    conn.receive_data(data)  # a pipelined request: h11 keeps it for the next cycle


async def _close(request: ProxyRequest, response: ProxyResponse) -> None:
    """Close the body iterator, then run the response's `close` whatever that did (Rule 5)."""
    aclose = getattr(response.body, "aclose", None)
    for step in (aclose, response.close):
        try:
            if step is not None:
                await step()
        except Exception:
            log.exception("proxy: closing the answer to %s %s failed", request.method, request.target)


async def _send_error(
    stream: anyio.abc.SocketStream, conn: h11.Connection, status: int, message: str
) -> None:
    """Send a plain-text proxy error and mark the connection for closing, if no answer has started."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = message.encode()
    headers = [*_error_headers(body, ERROR_TYPE_PROXY), ("Connection", "close")]
    try:
        await _send(stream, conn, h11.Response(status_code=status, headers=headers))
        await _send(stream, conn, h11.Data(data=body))
        await _send(stream, conn, h11.EndOfMessage())
    except (h11.LocalProtocolError, _SendFailed):
        pass  # nothing more can be said on this connection
