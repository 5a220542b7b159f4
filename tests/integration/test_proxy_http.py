"""The proxy's HTTP server and pass-through on real loopback sockets: httpx and raw-socket clients,
a local echo TCP server for CONNECT, and a stdlib http.server origin for `forward`."""

import contextlib
import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial

import anyio
import anyio.abc
import anyio.lowlevel
import h11
import httpx
import pytest

from lazyfly.local_registry import free_port
from lazyfly.p2p.proxy.headers import ERROR_TYPE, ERROR_TYPE_PROXY
from lazyfly.p2p.proxy.http_server import ProxyRequest, ProxyResponse, serve_http
from lazyfly.p2p.proxy.passthrough import forward, passthrough_client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
CHUNKS = [bytes([n]) * (1000 + n) for n in range(50)]
WHOLE = b"".join(CHUNKS)


@pytest.fixture
def anyio_backend():
    return "asyncio"  # the peer's services run on asyncio (grpc.aio)


@contextlib.asynccontextmanager
async def running(handler, *, read_timeout: float = 5.0) -> AsyncIterator[int]:
    """Serve `handler` on 127.0.0.1; yield the port; stop the server on exit."""
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_http, handler, "127.0.0.1", 0, read_timeout=read_timeout))
        yield port
        tg.cancel_scope.cancel()


async def chunks(parts: list[bytes], fail_after: int | None = None) -> AsyncIterator[bytes]:
    for number, part in enumerate(parts):
        if number == fail_after:
            raise RuntimeError("the body broke")
        await anyio.lowlevel.checkpoint()
        yield part


async def read_response(stream: anyio.abc.ByteStream, conn: h11.Connection) -> tuple[h11.Response, bytes]:
    """One whole response read with h11's client side."""
    head, body = None, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                conn.receive_data(await stream.receive())
            except anyio.EndOfStream:
                conn.receive_data(b"")
        elif isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return head, bytes(body)
        else:
            raise AssertionError(f"unexpected {event!r}")


async def read_until_closed(stream: anyio.abc.ByteStream) -> bytes:
    got = bytearray()
    with anyio.fail_after(5):
        while True:
            try:
                got += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return bytes(got)


@pytest.mark.parametrize("with_length", [False, True])
async def test_an_iterator_body_arrives_whole_and_in_order(with_length):
    async def handler(request: ProxyRequest) -> ProxyResponse:
        headers = [("Content-Length", str(len(WHOLE)))] if with_length else []
        return ProxyResponse(200, headers, chunks(CHUNKS))

    async with running(handler) as port, httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/blob")
    assert response.content == WHOLE
    if with_length:
        assert response.headers["Content-Length"] == str(len(WHOLE))
    else:
        assert response.headers["Transfer-Encoding"] == "chunked"


async def test_keep_alive_serves_two_requests_on_one_connection():
    seen = []

    async def handler(request: ProxyRequest) -> ProxyResponse:
        seen.append((request.method, request.target, request.header("x-NUMBER"), request.body))
        return ProxyResponse(200, [], request.body or b"empty")

    async with running(handler) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        conn = h11.Connection(h11.CLIENT)
        for number, body in enumerate([b"first", b""]):
            headers = [("Host", "x"), ("X-Number", str(number)), ("Content-Length", str(len(body)))]
            await stream.send(conn.send(h11.Request(method="PUT", target="/a", headers=headers)))
            await stream.send(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            head, got = await read_response(stream, conn)
            assert (head.status_code, got) == (200, body or b"empty")
            conn.start_next_cycle()
    assert seen == [("PUT", "/a", "0", b"first"), ("PUT", "/a", "1", b"")]


async def test_a_malformed_request_gets_400_and_is_closed():
    async def handler(request: ProxyRequest) -> ProxyResponse:
        raise AssertionError("never called")

    async with running(handler) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"NOT HTTP AT ALL\r\n\r\n")
        answer = await read_until_closed(stream)
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_a_request_that_trickles_past_the_read_timeout_is_closed():
    async def handler(request: ProxyRequest) -> ProxyResponse:
        raise AssertionError("never called")

    async def trickle(stream: anyio.abc.ByteStream) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            for number in range(30):  # a header line every 0.1 s: 3 s in all, unless cut off
                await anyio.sleep(0.1)
                await stream.send(b"X-Slow: %d\r\n" % number)

    async with running(handler, read_timeout=0.3) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream, anyio.create_task_group() as tg:
            started = anyio.current_time()
            tg.start_soon(trickle, stream)
            answer = await read_until_closed(stream)
            elapsed = anyio.current_time() - started
            tg.cancel_scope.cancel()
    assert elapsed < 1.5
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")  # a reset may eat the 408


async def test_a_handler_error_gives_500():
    async def handler(request: ProxyRequest) -> ProxyResponse:
        raise RuntimeError("handler bug")

    async with running(handler) as port, httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/x")
    assert response.status_code == 500


async def test_an_iterator_that_fails_before_its_first_chunk_gives_500():
    async def handler(request: ProxyRequest) -> ProxyResponse:
        return ProxyResponse(200, [], chunks(CHUNKS, fail_after=0))

    async with running(handler) as port, httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/x")
    assert response.status_code == 500


@pytest.mark.parametrize("with_length", [False, True])
async def test_an_iterator_that_fails_mid_body_leaves_the_body_incomplete(with_length):
    closed = anyio.Event()

    async def handler(request: ProxyRequest) -> ProxyResponse:
        headers = [("Content-Length", str(len(WHOLE)))] if with_length else []
        return ProxyResponse(200, headers, chunks(CHUNKS, fail_after=10), close=closed_set(closed))

    async with running(handler) as port, httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"http://127.0.0.1:{port}/x")
    assert closed.is_set()


async def test_a_body_shorter_than_its_content_length_is_cut_off():
    async def handler(request: ProxyRequest) -> ProxyResponse:
        return ProxyResponse(200, [("Content-Length", str(len(WHOLE) + 1))], chunks(CHUNKS))

    async with running(handler) as port, httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"http://127.0.0.1:{port}/x")


def closed_set(event: anyio.Event):
    async def close() -> None:
        event.set()

    return close


async def test_a_client_that_hangs_up_mid_body_cancels_the_iterator_and_close_runs():
    closed, cancelled = anyio.Event(), anyio.Event()

    async def endless() -> AsyncIterator[bytes]:
        yield b"first chunk"
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        yield b"never"

    async def handler(request: ProxyRequest) -> ProxyResponse:
        return ProxyResponse(200, [], endless(), close=closed_set(closed))

    async with running(handler) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"first chunk" not in got:
                got += await stream.receive()
        with anyio.fail_after(5):
            await cancelled.wait()
            await closed.wait()


async def test_head_answers_have_no_body():
    async def handler(request: ProxyRequest) -> ProxyResponse:
        return ProxyResponse(200, [("Content-Length", str(len(WHOLE)))], chunks(CHUNKS))

    async with running(handler) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        conn = h11.Connection(h11.CLIENT)
        for method in ["HEAD", "GET"]:  # the GET proves the HEAD left the connection in step
            await stream.send(conn.send(h11.Request(method=method, target="/x", headers=[("Host", "x")])))
            await stream.send(conn.send(h11.EndOfMessage()))
            head, body = await read_response(stream, conn)
            assert dict(head.headers)[b"content-length"] == str(len(WHOLE)).encode()
            assert body == (b"" if method == "HEAD" else WHOLE)
            conn.start_next_cycle()


async def echo_server(*, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    """Echo every byte back; close after the client's end of stream."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)

    async def echo(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    await stream.send(await stream.receive())

    async with listener:
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(echo)


async def test_connect_tunnels_bytes_both_ways():
    async def handler(request: ProxyRequest) -> ProxyResponse:
        raise AssertionError("CONNECT never reaches the handler")

    async with anyio.create_task_group() as tg:
        echo_port = await tg.start(echo_server)
        async with running(handler) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
            target = f"127.0.0.1:{echo_port}".encode()
            # Bytes right behind the request must go through the tunnel too.
            await stream.send(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\nearly")
            got = b""
            with anyio.fail_after(5):
                while not got.endswith(b"early"):
                    got += await stream.receive()
                assert got.startswith(b"HTTP/1.1 200 ")
                await stream.send(b"\x16\x03\x01 not http")
                got = b""
                while got != b"\x16\x03\x01 not http":
                    got += await stream.receive()
                await stream.send_eof()  # the half-close reaches the echo server, which closes
                assert await read_until_closed(stream) == b""
        tg.cancel_scope.cancel()


async def test_connect_to_a_closed_port_gets_502():
    async def handler(request: ProxyRequest) -> ProxyResponse:
        raise AssertionError("CONNECT never reaches the handler")

    closed_port = free_port()
    async with running(handler) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"CONNECT 127.0.0.1:{closed_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = await read_until_closed(stream)
    assert answer.startswith(b"HTTP/1.1 502 ")
    assert f"{ERROR_TYPE}: {ERROR_TYPE_PROXY}".encode() in answer


class _Origin(http.server.BaseHTTPRequestHandler):
    """Answers /missing with 404, anything else with a JSON echo of the request and hop headers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet."""

    def do_GET(self) -> None:
        if self.path == "/missing":
            self.send_error(404, "no such thing")
            return
        length = int(self.headers.get("Content-Length", "0"))
        echo = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": self.rfile.read(length).decode(),
        }
        body = json.dumps(echo).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Origin", "yes")
        self.send_header("Keep-Alive", "timeout=5")
        self.send_header("Connection", "X-Hop-Only")
        self.send_header("X-Hop-Only", "drop me")
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


@pytest.fixture
def origin() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.asynccontextmanager
async def forwarding_proxy() -> AsyncIterator[httpx.AsyncClient]:
    """The server running `forward`, and an httpx client that uses it as its proxy."""
    async with passthrough_client() as upstream, running(partial(forward, upstream)) as port:
        async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{port}") as client:
            yield client


async def test_forward_sends_method_headers_and_body_and_strips_hop_headers(origin):
    headers = {"X-Custom": "kept", "Proxy-Authorization": "Basic c2VjcmV0", "Connection": "X-Private"}
    headers["X-Private"] = "hop only"
    async with forwarding_proxy() as client:
        response = await client.post(f"{origin}/echo?q=1", headers=headers, content=b"payload")
    assert response.status_code == 200
    echo = response.json()
    seen = {k.lower(): v for k, v in echo["headers"]}
    assert (echo["method"], echo["path"], echo["body"]) == ("POST", "/echo?q=1", "payload")
    assert seen["x-custom"] == "kept"
    assert seen["host"] == origin.removeprefix("http://")
    assert not {"proxy-authorization", "x-private", "connection"} & seen.keys()
    assert response.headers["X-Origin"] == "yes"
    assert "Keep-Alive" not in response.headers
    assert "X-Hop-Only" not in response.headers


async def test_forward_passes_a_404_through(origin):
    async with forwarding_proxy() as client:
        response = await client.get(f"{origin}/missing")
    assert response.status_code == 404
    assert b"no such thing" in response.content
    assert ERROR_TYPE not in response.headers


async def test_forward_to_an_unreachable_origin_gives_502():
    closed_port = free_port()
    async with forwarding_proxy() as client:
        response = await client.get(f"http://127.0.0.1:{closed_port}/blob")
    assert response.status_code == 502
    assert response.headers[ERROR_TYPE] == ERROR_TYPE_PROXY
    assert "127.0.0.1" in response.text


async def test_forward_refuses_an_origin_form_target():
    async with passthrough_client() as upstream, running(partial(forward, upstream)) as port:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/v2/")
    assert response.status_code == 400
    assert response.headers[ERROR_TYPE] == ERROR_TYPE_PROXY
