"""Bad input gets a clear error, a non-zero exit, and no output that looks complete."""

import gzip
import io
import os
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.registry import RunningRegistry
from integration.cli import lazyfly

from lazyfly.local_registry import free_port

pytestmark = pytest.mark.integration


def _tar(path: Path, entries: list[tuple[str, bytes, str | None]], fmt: int = tarfile.GNU_FORMAT) -> Path:
    """Write a tar of (name, content, hardlink target) entries; the name is stored as given."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.LNKTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _assert_failed_cleanly(proc: subprocess.CompletedProcess[str], out: Path, *words: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ([("../escape", b"x", None)], ["..", "escape"]),
        ([("/etc/passwd", b"x", None)], ["absolute", "/etc/passwd"]),
        ([("a", b"1", None), ("./a", b"2", None)], ["appears twice"]),
        ([("link", b"", "missing")], ["hard link", "missing"]),
    ],
    ids=["dotdot", "absolute", "duplicate", "dangling-hardlink"],
)
def test_unsafe_tarball_is_refused(tmp_path: Path, entries, words):
    src = _tar(tmp_path / "bad.tar", entries)
    out = tmp_path / "out" / "image"
    out.parent.mkdir()
    _assert_failed_cleanly(lazyfly("build", src, "-o", out, check=False), out, "bad.tar", *words)


def test_broken_gzip_is_refused(tmp_path: Path):
    plain = _tar(tmp_path / "ok.tar", [("f", os.urandom(300_000), None)]).read_bytes()
    packed = bytearray(gzip.compress(plain))
    packed[len(packed) // 2] ^= 0x55
    src = tmp_path / "broken.tar.gz"
    src.write_bytes(bytes(packed))
    out = tmp_path / "out" / "image"
    out.parent.mkdir()
    _assert_failed_cleanly(lazyfly("build", src, "-o", out, check=False), out, "broken.tar.gz", "damaged")


def test_full_disk_leaves_no_output(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], check=True)
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "random.bin").write_bytes(os.urandom(8 << 20))
        out = mnt / "image"
        _assert_failed_cleanly(lazyfly("build", src, "-o", out, check=False), out, "no space left")
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)


def test_missing_image_names_repository_and_tag(registry: RunningRegistry):
    proc = lazyfly("inspect", "--plain-http", f"{registry.host}/nothing:here", check=False)
    assert proc.returncode != 0 and "nothing" in proc.stderr and "here" in proc.stderr


def test_registry_demanding_credentials_is_an_auth_error(tmp_path: Path, monkeypatch):
    from fixtures.registry import bcrypt_available, start_registry

    if not bcrypt_available():
        pytest.skip("no bcrypt implementation to make an htpasswd file")
    running = start_registry(tmp_path, users={"alice": "secret"})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty-docker-config"))
    try:
        proc = lazyfly("inspect", "--plain-http", f"{running.host}/repo:tag", check=False)
    finally:
        running.stop()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "auth" in proc.stderr.lower() or "401" in proc.stderr


class _RudeServer:
    """Accepts HTTP connections and answers 503, or hangs up without a word."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    if self.behaviour == "503":
                        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass


@pytest.fixture(params=["503", "hangup"])
def rude_registry(request) -> Iterator[str]:
    server = _RudeServer(request.param)
    server.thread.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stopping.set()
        server.thread.join(timeout=5)
        server.sock.close()


def test_failing_registry_is_a_clear_error_not_a_hang(rude_registry: str, tmp_path: Path):
    out_ref = f"{rude_registry}/repo:tag"
    proc = lazyfly("convert", "--plain-http", out_ref, f"oci:{tmp_path / 'out'}", check=False, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert rude_registry in proc.stderr
    assert not (tmp_path / "out").exists()


def test_dead_registry_is_a_clear_error(tmp_path: Path):
    host = f"127.0.0.1:{free_port()}"
    proc = lazyfly("inspect", "--plain-http", f"{host}/repo:tag", check=False, timeout=120)
    assert proc.returncode != 0 and host in proc.stderr and "Traceback" not in proc.stderr
