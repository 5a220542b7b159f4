"""The three blob backends against real parts: an OCI layout, a docker-registry, a forwarding proxy.

Each backend runs the conformance suite (tests/suites/backend_suite.py); then the faults: a registry
killed or stalled mid-use, a proxy stopped or failing, a Bearer token that expires between reads.
Last, the registry backend's ThreadedTransport against scripted servers: heads in pieces, chunked
and streamed bodies, HEAD, stale keep-alive connections, cancellation and TLS.
Everything runs under trio, as fusefs does.
"""

import contextlib
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from fixtures.forward_proxy import ForwardProxy
from fixtures.registry import (
    BearerAuthProxy,
    RunningRegistry,
    basic_auth_entry,
    start_registry,
    write_docker_config,
)
from suites.backend_suite import (
    CALL_TIMEOUT,
    BackendSource,
    BlobBackendSuite,
    CollectingSink,
    read_into,
    suite_blobs,
)

from lazyfly.backend.base import BlobBackend, read_range
from lazyfly.backend.oci_layout import OciLayoutBackend
from lazyfly.backend.peer_proxy import PeerProxyBackend
from lazyfly.backend.registry import RegistryBackend
from lazyfly.backend.threaded_transport import ThreadedTransport
from lazyfly.errors import Unavailable
from lazyfly.oci.layout import OciLayout
from lazyfly.oci.reference import RegistryRef
from lazyfly.oci.registry import RegistryClient

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
REPO = "lazyfly/backend-suite"


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture(autouse=True)
def empty_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never read the credentials of whoever runs the tests."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


def push_blobs(host: str, blobs: dict[str, bytes], directory: Path) -> None:
    """Push `blobs` to the registry at `host` (plain HTTP) with RegistryClient."""
    directory.mkdir(parents=True, exist_ok=True)

    async def push() -> None:
        async with RegistryClient(host, plain_http=True) as client:
            for digest, data in blobs.items():
                path = directory / digest.partition(":")[2]
                path.write_bytes(data)
                await client.push_blob(REPO, digest, len(data), path)

    anyio.run(push, backend="trio")


@pytest.fixture(scope="module")
def suite_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """One registry holding the suite's blobs, shared by the suite's tests of this module."""
    root = tmp_path_factory.mktemp("suite-registry")
    running = start_registry(root)
    try:
        push_blobs(running.host, suite_blobs(), root / "upload")
        yield running
    finally:
        running.stop()


class TestOciLayoutBackend(BlobBackendSuite):
    @pytest.fixture
    def backend_source(self, tmp_path: Path) -> BackendSource:
        layout = OciLayout(tmp_path / "layout").create()
        blobs = suite_blobs()
        for data in blobs.values():
            layout.write_blob(data, "application/octet-stream")
        return BackendSource(lambda: OciLayoutBackend(layout.path), blobs)


class TestRegistryBackend(BlobBackendSuite):
    @pytest.fixture
    def backend_source(self, suite_registry: RunningRegistry) -> BackendSource:
        ref = RegistryRef(suite_registry.host, REPO)
        return BackendSource(lambda: RegistryBackend(ref, plain_http=True), suite_blobs())


@pytest.mark.parametrize("backend_class", ["local", "registry"])
async def test_local_and_registry_backends_receive_each_piece_into_the_sinks_buffer(
    backend_class: str, suite_registry: RunningRegistry, tmp_path: Path
):
    digest, data = max(suite_blobs().items(), key=lambda item: len(item[1]))
    if backend_class == "local":
        layout = OciLayout(tmp_path / "layout").create()
        layout.write_blob(data, "application/octet-stream")
        backend: BlobBackend = OciLayoutBackend(layout.path)
    else:
        backend = RegistryBackend(RegistryRef(suite_registry.host, REPO), plain_http=True)
    sink = CollectingSink([4096, 1 << 20, 12345])
    try:
        await read_into(backend, digest, 77, sink)
    finally:
        await backend.aclose()
    assert b"".join(sink.pieces) == data[77 : 77 + (4096 + (1 << 20) + 12345)]
    assert sink.received_in_place == 3  # no answer assembled first (threaded_transport.py, Rule 6)


class TestPeerProxyBackend(BlobBackendSuite):
    @pytest.fixture
    def backend_source(self, suite_registry: RunningRegistry) -> Iterator[BackendSource]:
        ref = RegistryRef(suite_registry.host, REPO)
        with ForwardProxy() as proxy:
            # No fallback: every read of the suite must go through the proxy.
            yield BackendSource(
                lambda: PeerProxyBackend(proxy.url, ref, fallback=None, plain_http=True), suite_blobs()
            )


# --- faults ----------------------------------------------------------------------------------------


@pytest.fixture
def blob(registry: RunningRegistry, tmp_path: Path) -> tuple[str, bytes]:
    """One blob pushed to the function-scoped `registry`."""
    blobs = {d: b for d, b in suite_blobs().items() if len(b) == 300_000}
    push_blobs(registry.host, blobs, tmp_path / "upload")
    ((digest, data),) = blobs.items()
    return digest, data


async def test_registry_killed_mid_use_gives_unavailable_in_bounded_time(
    registry: RunningRegistry, blob: tuple[str, bytes]
):
    digest, data = blob
    backend = RegistryBackend(RegistryRef(registry.host, REPO), plain_http=True, attempt_timeout=5, tries=3)
    try:
        assert await read_range(backend, digest, 0, 100) == data[:100]
        registry.stop()
        with anyio.fail_after(CALL_TIMEOUT):
            with pytest.raises(Unavailable, match=registry.host):
                await read_range(backend, digest, 100, 100)
        assert (backend.stats.requests, backend.stats.errors, backend.stats.retries) == (2, 1, 2)
    finally:
        await backend.aclose()


@pytest.fixture
def stalled_host() -> Iterator[str]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


async def test_stalled_registry_gives_unavailable_after_attempt_timeouts(stalled_host: str):
    digest = next(iter(suite_blobs()))
    backend = RegistryBackend(
        RegistryRef(stalled_host, REPO), plain_http=True, attempt_timeout=0.5, tries=3, prefetch_tries=1
    )
    try:
        with anyio.fail_after(CALL_TIMEOUT):
            with pytest.raises(Unavailable, match=r"no answer within 0\.5 s"):
                await read_range(backend, digest, 0, 1)
            assert backend.stats.retries == 2
            with pytest.raises(Unavailable, match="try 1 of 1"):
                await read_range(backend, digest, 0, 1, prefetch=True)
            assert backend.stats.retries == 2  # prefetch reads retry less: here, not at all
    finally:
        await backend.aclose()


async def test_expired_bearer_token_is_refreshed_between_reads(
    registry: RunningRegistry, blob: tuple[str, bytes], empty_docker_config: Path
):
    digest, data = blob
    with BearerAuthProxy(registry.host, expires_in=2) as auth_proxy:
        write_docker_config(empty_docker_config, auth_proxy.host, **basic_auth_entry("alice", "s3cret"))
        backend = RegistryBackend(RegistryRef(auth_proxy.host, REPO), plain_http=True)
        try:
            with anyio.fail_after(CALL_TIMEOUT):
                assert await read_range(backend, digest, 0, 10) == data[:10]
                assert (auth_proxy.token_requests, auth_proxy.challenges) == (1, 1)
                await anyio.sleep(2.5)  # the token has expired now
                assert await read_range(backend, digest, 10, 10) == data[10:20]
        finally:
            await backend.aclose()
        assert auth_proxy.token_requests == 2  # renewed once...
        assert auth_proxy.challenges == 1  # ...before the registry had to refuse it


def proxy_backend(proxy: ForwardProxy, registry: RunningRegistry, **kw: object) -> PeerProxyBackend:
    ref = RegistryRef(registry.host, REPO)
    fallback = RegistryBackend(ref, plain_http=True)
    return PeerProxyBackend(proxy.url, ref, fallback=fallback, plain_http=True, **kw)  # type: ignore[arg-type]


async def test_proxy_sees_dragonfly_headers(registry: RunningRegistry, blob: tuple[str, bytes]):
    digest, data = blob
    with ForwardProxy() as proxy:
        backend = proxy_backend(proxy, registry)
        try:
            assert await read_range(backend, digest, 5, 10) == data[5:15]
            assert await read_range(backend, digest, 15, 10, prefetch=True) == data[15:25]
        finally:
            await backend.aclose()
    on_demand, prefetch = proxy.requests_for(digest)
    assert on_demand.url == f"http://{registry.host}/v2/{REPO}/blobs/{digest}"
    assert on_demand.headers["Range"] == "bytes=5-14"
    assert on_demand.headers["X-Dragonfly-Prefetch"] == "true"
    assert on_demand.headers["X-Dragonfly-Registry"] == f"http://{registry.host}"
    assert "X-Dragonfly-Prefetch" not in prefetch.headers
    assert prefetch.headers["X-Dragonfly-Registry"] == f"http://{registry.host}"
    assert backend.stats.fallbacks == 0


async def test_stopped_proxy_falls_back_warns_once_and_comes_back(
    registry: RunningRegistry, blob: tuple[str, bytes], caplog: pytest.LogCaptureFixture
):
    digest, data = blob
    proxy = ForwardProxy().start()
    backend = proxy_backend(proxy, registry, cooldown=1.0)
    try:
        with anyio.fail_after(CALL_TIMEOUT):
            assert await read_range(backend, digest, 0, 10) == data[:10]
            proxy.stop()
            with caplog.at_level(logging.INFO, logger="lazyfly.backend.peer_proxy"):
                for offset in range(10, 50, 10):
                    assert await read_range(backend, digest, offset, 10) == data[offset : offset + 10]
                assert backend.stats.fallbacks == 4
                warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
                assert len(warnings) == 1 and proxy.url in warnings[0].getMessage()
                with ForwardProxy(port=proxy.port) as revived:
                    await anyio.sleep(1.1)  # the cool-down passes
                    assert await read_range(backend, digest, 50, 10) == data[50:60]
                    assert len(revived.requests_for(digest)) == 1
                assert any("answers again" in r.getMessage() for r in caplog.records)
        assert backend.stats.fallbacks == 4
    finally:
        await backend.aclose()
        proxy.stop()


async def test_proxy_answering_500_falls_back(registry: RunningRegistry, blob: tuple[str, bytes]):
    digest, data = blob
    with ForwardProxy() as proxy:
        proxy.fail_with = 500
        backend = proxy_backend(proxy, registry)
        try:
            with anyio.fail_after(CALL_TIMEOUT):
                assert await read_range(backend, digest, 0, 1000) == data[:1000]
                assert await read_range(backend, digest, 1000, 1000) == data[1000:2000]
        finally:
            await backend.aclose()
        assert len(proxy.requests_for(digest)) == 1  # the second read went straight to the fallback
    assert backend.stats.fallbacks == 2
    assert backend.fallback is not None and backend.fallback.stats.requests == 2  # type: ignore[attr-defined]


async def test_stopped_proxy_without_fallback_gives_unavailable(
    registry: RunningRegistry, blob: tuple[str, bytes]
):
    digest, _ = blob
    proxy = ForwardProxy()
    proxy.stop()  # never started: its port refuses connections
    ref = RegistryRef(registry.host, REPO)
    backend = PeerProxyBackend(proxy.url, ref, fallback=None, plain_http=True, tries=2, attempt_timeout=5)
    try:
        with anyio.fail_after(CALL_TIMEOUT):
            with pytest.raises(Unavailable, match="peer proxy"):
                await read_range(backend, digest, 0, 10)
        assert (backend.stats.errors, backend.stats.retries, backend.stats.fallbacks) == (1, 1, 0)
    finally:
        await backend.aclose()


async def test_proxy_passes_bearer_auth_to_the_registry(
    registry: RunningRegistry, blob: tuple[str, bytes], empty_docker_config: Path
):
    digest, data = blob
    with BearerAuthProxy(registry.host) as auth_proxy, ForwardProxy() as proxy:
        write_docker_config(empty_docker_config, auth_proxy.host, **basic_auth_entry("alice", "s3cret"))
        ref = RegistryRef(auth_proxy.host, REPO)
        backend = PeerProxyBackend(proxy.url, ref, fallback=None, plain_http=True)
        try:
            with anyio.fail_after(CALL_TIMEOUT):
                assert await read_range(backend, digest, 0, 10) == data[:10]
                assert await read_range(backend, digest, 10, 10) == data[10:20]
        finally:
            await backend.aclose()
        seen = proxy.requests_for(digest)
    assert [r.headers.get("Authorization", "").split(" ")[0] for r in seen] == ["", "Bearer", "Bearer"]
    assert auth_proxy.token_requests == 1


# --- ThreadedTransport against scripted servers -----------------------------------------------------

Script = Callable[[int, bytes], tuple[list[bytes | float], bool]]  # (connection, request) -> (steps, close)


class ScriptedServer:
    """A loopback HTTP server that answers each request with scripted bytes and pauses (floats).

    `script(connection_number, request_head)` returns the steps and whether to hang up after them;
    the connections it accepted are counted, to see the client reuse them.
    """

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"{'https' if tls else 'http'}://localhost:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        with contextlib.suppress(OSError), contextlib.closing(conn):
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    more = conn.recv(65536)
                    if not more:
                        return
                    buf += more
                head, _, buf = buf.partition(b"\r\n\r\n")
                steps, close = self.script(number, head)
                for step in steps:
                    if isinstance(step, float):
                        time.sleep(step)
                    else:
                        conn.sendall(step)
                if close:
                    return

    def close(self) -> None:
        self._listener.close()


@contextlib.contextmanager
def scripted(script: Script, tls: ssl.SSLContext | None = None) -> Iterator[ScriptedServer]:
    server = ScriptedServer(script, tls)
    try:
        yield server
    finally:
        server.close()


async def get(url: str, method: str = "GET", **kw: object) -> list[httpx.Response]:
    """Send `method` to `url` twice through one ThreadedTransport; return both responses."""
    async with httpx.AsyncClient(transport=ThreadedTransport(**kw)) as client:  # type: ignore[arg-type]
        with anyio.fail_after(CALL_TIMEOUT):
            return [await client.request(method, url) for _ in range(2)]


async def test_threaded_transport_waits_for_a_head_that_arrives_in_pieces():
    def script(_: int, __: bytes) -> tuple[list[bytes | float], bool]:
        return [b"HTTP/1.1 200 OK\r\nContent-", 0.2, b"Length: 5\r\n\r\nhel", 0.1, b"lo"], False

    with scripted(script) as server:
        responses = await get(server.url)
    assert [r.content for r in responses] == [b"hello", b"hello"]
    assert server.connections == 1  # kept alive and reused


async def test_threaded_transport_streams_chunked_and_long_bodies():
    def script(_: int, head: bytes) -> tuple[list[bytes | float], bool]:
        if head.startswith(b"GET /chunked "):
            return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], False
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", 0.05, bytes(1000)], False

    with scripted(script) as server:
        async with httpx.AsyncClient(transport=ThreadedTransport(buffer_limit=100)) as client:
            with anyio.fail_after(CALL_TIMEOUT):
                first = await client.get(f"{server.url}/chunked")
                second = await client.get(f"{server.url}/long")  # longer than the buffer limit
    assert first.content == b"hello" and second.content == bytes(1000)
    assert server.connections == 1


async def test_threaded_transport_head_answers_have_no_body():
    def script(_: int, __: bytes) -> tuple[list[bytes | float], bool]:
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n"], False

    with scripted(script) as server:
        responses = await get(server.url, "HEAD")
    assert [(r.headers["content-length"], r.content) for r in responses] == [("12345", b"")] * 2
    assert server.connections == 1


async def test_threaded_transport_sends_again_when_the_server_closed_an_idle_connection():
    def script(_: int, __: bytes) -> tuple[list[bytes | float], bool]:
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], True  # hangs up, says nothing

    with scripted(script) as server:
        responses = await get(server.url)
    assert [r.content for r in responses] == [b"ok", b"ok"]
    assert server.connections == 2


async def test_threaded_transport_cancelled_call_shuts_its_socket_down_at_once():
    hung_up = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def silent() -> None:  # reads the request, never answers, notes when the client hangs up
            conn, _ = listener.accept()
            with conn:
                while conn.recv(65536):
                    pass
                hung_up.set()

        threading.Thread(target=silent, daemon=True).start()
        async with httpx.AsyncClient(transport=ThreadedTransport(), timeout=60) as client:
            with anyio.fail_after(CALL_TIMEOUT):
                with anyio.move_on_after(0.3):
                    await client.get(f"http://127.0.0.1:{listener.getsockname()[1]}/")
                await anyio.to_thread.run_sync(hung_up.wait, 5.0)
        assert hung_up.is_set()  # not left hanging until the read timeout (60 s)


@pytest.fixture
def localhost_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for `localhost` (skipped without openssl)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate: {made.stderr.decode(errors='replace')}")
    return cert, key


async def test_threaded_transport_speaks_tls(
    localhost_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
):
    cert, key = localhost_cert
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)

    def script(_: int, __: bytes) -> tuple[list[bytes | float], bool]:
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", 0.05, b"secret"], False

    with scripted(script, tls) as server:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await get(server.url)  # an unknown certificate is refused
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        responses = await get(server.url)
    assert [r.content for r in responses] == [b"secret", b"secret"]
    assert server.connections == 2  # the refused one, then one kept alive
