"""lazyfly.http_unix: the h11 server and client over a real unix socket in tmp_path, under trio."""

import functools
import json
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from lazyfly.errors import InvalidArgument, Unavailable
from lazyfly.http_unix import Headers, request, serve_unix

pytestmark = pytest.mark.timeout(30)


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test under trio.run (real clock: these tests use real sockets)."""

    @functools.wraps(fn)
    def run(**kwargs: object) -> None:
        trio.run(functools.partial(fn, **kwargs))

    return run


async def echo(method: str, target: str, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
    if target == "/boom":
        raise RuntimeError("handler bug")
    answer = {"method": method, "target": target, "body": body.decode(), "headers": dict(headers)}
    return 200, [("Content-Type", "application/json")], json.dumps(answer).encode()


async def raw_exchange(path: Path, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send `data` on a fresh connection and return all bytes until the server closes."""
    stream = await trio.open_unix_socket(str(path))
    received = b""
    async with stream:
        if data:
            await stream.send_all(data)
        with trio.fail_after(wait):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


@trio_test
async def test_request_round_trips_method_target_and_json_body(tmp_path: Path):
    sock = tmp_path / "api.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_unix, sock, echo)
        with trio.fail_after(5):
            status, body = await request(sock, "POST", "/api/v1/things?x=1", {"name": "a"})
        nursery.cancel_scope.cancel()
    answer = json.loads(body)
    assert status == 200
    assert (answer["method"], answer["target"]) == ("POST", "/api/v1/things?x=1")
    assert json.loads(answer["body"]) == {"name": "a"}
    assert answer["headers"]["content-type"] == "application/json"


@trio_test
async def test_a_keep_alive_connection_serves_two_requests(tmp_path: Path):
    sock = tmp_path / "api.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_unix, sock, echo)
        one = b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
        two = b"GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        received = await raw_exchange(sock, one + two)
        nursery.cancel_scope.cancel()
    assert received.count(b"HTTP/1.1 200") == 2
    assert b'"/one"' in received and b'"/two"' in received


@trio_test
async def test_a_malformed_request_gets_400_and_the_server_keeps_serving(tmp_path: Path):
    sock = tmp_path / "api.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_unix, sock, echo)
        received = await raw_exchange(sock, b"THIS IS NOT HTTP\r\n\r\n")
        with trio.fail_after(5):
            status, _ = await request(sock, "GET", "/after")
        nursery.cancel_scope.cancel()
    assert received.startswith(b"HTTP/1.1 400 ")
    assert status == 200


@trio_test
async def test_a_slow_client_gets_408_and_is_disconnected(tmp_path: Path):
    sock = tmp_path / "api.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_unix, sock, echo, read_timeout=0.3))
        start = trio.current_time()
        received = await raw_exchange(sock, b"GET /slow HTTP/1.1\r\nHost: x\r\n", wait=5)
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert received.startswith(b"HTTP/1.1 408 ")
    assert 0.25 < elapsed < 3


@trio_test
async def test_an_idle_connection_is_closed_without_a_response(tmp_path: Path):
    sock = tmp_path / "api.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_unix, sock, echo, read_timeout=0.2))
        received = await raw_exchange(sock, b"", wait=5)
        nursery.cancel_scope.cancel()
    assert received == b""


@trio_test
async def test_a_handler_error_gives_500_and_the_server_keeps_serving(tmp_path: Path):
    sock = tmp_path / "api.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_unix, sock, echo)
        with trio.fail_after(5):
            failed, _ = await request(sock, "GET", "/boom")
            status, _ = await request(sock, "GET", "/fine")
        nursery.cancel_scope.cancel()
    assert (failed, status) == (500, 200)


@trio_test
async def test_a_body_over_the_limit_gets_413(tmp_path: Path):
    sock = tmp_path / "api.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_unix, sock, echo, max_body=100))
        with trio.fail_after(5):
            status, body = await request(sock, "POST", "/big", b"x" * 1000)
        nursery.cancel_scope.cancel()
    assert status == 413
    assert "100 bytes" in json.loads(body)["message"]


@trio_test
async def test_the_socket_is_owner_only_and_removed_when_the_server_stops(tmp_path: Path):
    sock = tmp_path / "api.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_unix, sock, echo)
        mode = sock.lstat().st_mode
        nursery.cancel_scope.cancel()
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert not sock.exists()


@trio_test
async def test_a_stale_socket_is_replaced_but_a_regular_file_is_not(tmp_path: Path):
    stale = tmp_path / "stale.sock"
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(str(stale))
    listener.close()  # the file stays: a socket left by a dead daemon
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_unix, stale, echo)
        with trio.fail_after(5):
            status, _ = await request(stale, "GET", "/")
        nursery.cancel_scope.cancel()
    assert status == 200
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(InvalidArgument, match="not a socket"):
        await serve_unix(regular, echo)
    assert regular.read_text() == "keep me"


@trio_test
async def test_the_client_raises_unavailable_when_no_server_listens(tmp_path: Path):
    with pytest.raises(Unavailable, match=r"missing\.sock"):
        await request(tmp_path / "missing.sock", "GET", "/")
