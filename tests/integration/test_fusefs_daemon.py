"""`lazyfly fusefs`: one daemon, one FUSE mount, images added and removed through its HTTP API."""

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from integration.cli import LAZYFLY, lazyfly
from prometheus_client.parser import text_string_to_metric_families

from lazyfly.api.fusefs import DAEMON_PATH, IMAGES_PATH, METRICS_PATH, image_path, session_socket_path
from lazyfly.errors import Unavailable
from lazyfly.fusefs.mountpoint import mount_entry
from lazyfly.http_unix import DEFAULT_REQUEST_TIMEOUT, request
from lazyfly.mountinfo import mount_fields
from lazyfly.processes import stop_processes

pytestmark = pytest.mark.integration
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def make_tree(root: Path, seed: int, files: int) -> Path:
    rng = random.Random(seed)
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "hello.txt").write_text(f"hello from tree {seed}\n")
    for i in range(files):
        where = root / ("dir" if i % 2 else "dir/sub") / f"file{i}.bin"
        where.write_bytes(rng.randbytes(rng.choice([1, 4096, 100_000, 700_000])))
    os.symlink("hello.txt", root / "link")
    return root


def source_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Two built images: name → (source tree, OCI layout)."""
    base = tmp_path_factory.mktemp("images")
    built = {}
    for name, seed in (("alpha", 1), ("beta", 2)):
        tree = make_tree(base / f"{name}-tree", seed, files=6)
        layout = base / f"{name}-layout"
        lazyfly("build", tree, "-o", layout, "--chunk-size", "64KiB")
        built[name] = (tree, layout)
    return built


class Daemon:
    """A `lazyfly fusefs` subprocess with its mount and API socket; always cleaned up."""

    def __init__(self, tmp_path: Path, *extra: object, pass_fds: tuple[int, ...] = ()) -> None:
        self.mountpoint = tmp_path / "mnt"
        self.socket = tmp_path / "run" / "api.sock"
        self.log = tmp_path / "daemon.log"
        argv = [
            LAZYFLY,
            "-v",
            "fusefs",
            "--mountpoint",
            self.mountpoint,
            "--api-socket",
            self.socket,
            "--cache-dir",
            tmp_path / "cache",
            *extra,
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(list(map(str, argv)), stdout=log, stderr=log, pass_fds=pass_fds)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"daemon exited:\n{self.log.read_text()}"
            entry = mount_entry(self.mountpoint)
            if self.socket.exists() and entry is not None and entry[0].startswith("fuse") and self.running():
                return
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready within {START_TIMEOUT} s:\n{self.log.read_text()}")

    def running(self) -> bool:
        """True once the API answers and the daemon is RUNNING: it serves its API a moment before
        (INIT), and answers image requests then with 503."""
        try:
            status, body = self.call("GET", DAEMON_PATH)
        except Unavailable:
            return False
        return status == 200 and json.loads(body)["state"] == "RUNNING"

    def call(self, method: str, target: str, body: object = None) -> tuple[int, bytes]:
        async def exchange() -> tuple[int, bytes]:
            with trio.fail_after(DEFAULT_REQUEST_TIMEOUT):
                return await request(self.socket, method, target, body)

        return trio.run(exchange)

    def add(self, image_id: str, reference: object) -> tuple[int, dict]:
        status, body = self.call("POST", IMAGES_PATH, {"id": image_id, "reference": str(reference)})
        return status, json.loads(body)

    def cleanup(self) -> None:
        stop_processes([self.process], STOP_TIMEOUT)
        subprocess.run(["umount", "-l", self.mountpoint], capture_output=True)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = Daemon(tmp_path)
    try:
        yield running
    finally:
        running.cleanup()


def assert_serves(mounted: Path, tree: Path) -> None:
    expected = source_files(tree)
    assert source_files(mounted) == expected
    assert os.readlink(mounted / "link") == "hello.txt"
    assert sorted(os.listdir(mounted)) == sorted(os.listdir(tree))


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_two_images_are_served_side_by_side(daemon: Daemon, images: dict[str, tuple[Path, Path]]):
    for name, (_, layout) in images.items():
        status, info = daemon.add(name, layout if name == "alpha" else f"oci:{layout}")
        assert status == 201, info
        assert info["id"] == name and info["backend"] == "local" and info["blobs"]
    assert sorted(os.listdir(daemon.mountpoint)) == ["alpha", "beta"]
    for name, (tree, _) in images.items():
        assert_serves(daemon.mountpoint / name, tree)

    status, body = daemon.call("GET", DAEMON_PATH)
    info = json.loads(body)
    assert status == 200
    assert info["state"] == "RUNNING" and info["mountpoint"] == str(daemon.mountpoint)
    assert [image["id"] for image in info["images"]] == ["alpha", "beta"]
    assert all(image["cache"]["bytes_fetched"] > 0 for image in info["images"])

    status, body = daemon.call("GET", METRICS_PATH)
    assert status == 200
    samples = metric_samples(body.decode())
    for name in images:
        fetched = samples[("lazyfly_fusefs_fetched_bytes_total", (("backend", "local"), ("image", name)))]
        assert fetched > 0
        assert samples[("lazyfly_fusefs_chunk_reads_total", (("image", name),))] > 0
        assert samples[("lazyfly_fusefs_digest_failures_total", (("image", name),))] == 0
        assert samples[("lazyfly_fusefs_oldest_inflight_age_seconds", (("image", name),))] == 0
    assert samples[("lazyfly_fusefs_images", ())] == 2


def test_deleting_an_image_makes_its_directory_disappear(
    daemon: Daemon, images: dict[str, tuple[Path, Path]]
):
    for name, (_, layout) in images.items():
        assert daemon.add(name, layout)[0] == 201
    gone = daemon.mountpoint / "alpha"
    assert (gone / "hello.txt").read_text().startswith("hello")  # the kernel now caches its dentry

    status, body = daemon.call("DELETE", image_path("alpha"))
    assert (status, body) == (204, b"")
    deadline = time.monotonic() + 5  # the dentry is invalidated asynchronously
    while gone.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gone.exists()
    assert os.listdir(daemon.mountpoint) == ["beta"]
    assert_serves(daemon.mountpoint / "beta", images["beta"][0])

    status, body = daemon.call("DELETE", image_path("alpha"))
    assert status == 404 and "alpha" in json.loads(body)["message"]
    status, body = daemon.call("GET", DAEMON_PATH)
    assert [image["id"] for image in json.loads(body)["images"]] == ["beta"]


def test_bad_adds_get_4xx_with_readable_messages(
    daemon: Daemon, images: dict[str, tuple[Path, Path]], tmp_path: Path
):
    layout = images["alpha"][1]
    assert daemon.add("alpha", layout)[0] == 201
    status, error = daemon.add("alpha", layout)
    assert status == 409 and "alpha" in error["message"]

    status, error = daemon.add("missing", f"oci:{tmp_path / 'nowhere'}")
    assert status == 404 and "nowhere" in error["message"]
    status, error = daemon.add("bad", "Not A Reference!")
    assert status == 400 and "Not A Reference!" in error["message"]
    status, error = daemon.add("../escape", layout)
    assert status == 400 and "image id" in error["message"]
    status, body = daemon.call("POST", IMAGES_PATH, {"id": "x", "reference": str(layout), "backend": "local"})
    assert status == 400 and "backend" in json.loads(body)["message"]
    status, body = daemon.call("POST", IMAGES_PATH, b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(body)["message"]
    assert os.listdir(daemon.mountpoint) == ["alpha"]


def test_sigterm_stops_the_daemon_and_unmounts(daemon: Daemon, images: dict[str, tuple[Path, Path]]):
    assert daemon.add("alpha", images["alpha"][1])[0] == 201
    assert (daemon.mountpoint / "alpha" / "hello.txt").exists()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=STOP_TIMEOUT) == 0, daemon.log.read_text()
    assert mount_entry(daemon.mountpoint) is None
    assert not daemon.socket.exists()
    assert "stopped" in daemon.log.read_text()


def test_an_image_added_with_prefetch_all_is_fetched_before_it_is_read(
    daemon: Daemon, images: dict[str, tuple[Path, Path]]
):
    layout = images["beta"][1]
    add = {"id": "beta", "reference": str(layout), "prefetch": {"mode": "all", "workers": 1}}
    status, body = daemon.call("POST", IMAGES_PATH, add)
    assert status == 201, body
    deadline = time.monotonic() + 20
    cache: dict = {}
    while time.monotonic() < deadline:
        cache = json.loads(daemon.call("GET", image_path("beta"))[1])["cache"]
        if cache["prefetch_bytes"] and not cache["inflight"]:
            break
        time.sleep(0.1)
    assert cache["prefetch_bytes"] > 0 and cache["cache_hits"] == 0
    assert_serves(daemon.mountpoint / "beta", images["beta"][0])
    after = json.loads(daemon.call("GET", image_path("beta"))[1])["cache"]
    assert after["bytes_fetched"] == cache["bytes_fetched"]  # every read came from the cache
    status, body = daemon.call("DELETE", image_path("beta"))
    assert status == 204


def receive_session_fd(daemon: Daemon) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(session_socket_path(daemon.socket)))
        _, fds, _, _ = socket.recv_fds(client, 1, 1)
    return fds[0]


# Run in child processes: a process that holds a file of the mount open cannot fork while no
# daemon serves it (the child's close of that descriptor waits for FLUSH), so the test never does.
HOLD_AND_FINISH = """
import hashlib, sys
with open(sys.argv[1], "rb") as f:
    head = f.read(4096)
    print(len(head), flush=True)
    sys.stdin.readline()
    print(hashlib.sha256(head + f.read()).hexdigest(), flush=True)
"""
READ_ALL = """
import hashlib, sys
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        print(hashlib.sha256(f.read()).hexdigest(), flush=True)
"""


def python(script: str, *args: object) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", script, *map(str, args)]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def abort_fuse_connection(mountpoint: Path) -> None:
    """Fail every waiting request of the FUSE mount at `mountpoint` (so a failed test never hangs)."""
    fields = mount_fields(mountpoint)
    if fields is None:
        return
    connections = Path("/sys/fs/fuse/connections")
    if not any(connections.iterdir()):
        subprocess.run(["mount", "-t", "fusectl", "none", connections], capture_output=True)
    abort = connections / fields[2].split(":")[1] / "abort"
    if abort.exists():
        abort.write_text("1")


def test_a_new_daemon_takes_over_a_killed_daemons_session_and_waiting_reads_complete(
    tmp_path: Path, images: dict[str, tuple[Path, Path]]
):
    tree, layout = images["alpha"]
    expected = {rel: hashlib.sha256(data).hexdigest() for rel, data in source_files(tree).items()}
    name = max(expected, key=lambda rel: (tree / rel).stat().st_size)
    first = Daemon(tmp_path)
    children: list[subprocess.Popen[str]] = []
    session_fd = -1
    try:
        status, info = first.add("alpha", layout)
        assert status == 201, info
        holder = python(HOLD_AND_FINISH, first.mountpoint / "alpha" / name)
        children.append(holder)
        assert holder.stdout.readline().strip() == "4096"
        session_fd = receive_session_fd(first)
        first.process.kill()
        first.process.wait()

        reader = python(READ_ALL, *(first.mountpoint / "alpha" / rel for rel in expected))
        children.append(reader)
        with pytest.raises(subprocess.TimeoutExpired):
            reader.wait(timeout=1.0)  # the reads wait in the kernel; they do not fail

        restore = tmp_path / "restore.json"
        restore.write_text(json.dumps([{"id": "alpha", "reference": str(layout), "slot": info["slot"]}]))
        second = Daemon(tmp_path, "--takeover-fd", session_fd, "--restore", restore, pass_fds=(session_fd,))
        try:
            out, _ = reader.communicate(timeout=60)
            assert out.split() == list(expected.values())
            out, _ = holder.communicate("go\n", timeout=60)
            assert out.strip() == expected[name]
        finally:
            second.cleanup()
        assert mount_entry(first.mountpoint) is None
    finally:
        abort_fuse_connection(first.mountpoint)
        if session_fd >= 0:
            os.close(session_fd)
        for child in children:
            child.kill()
            child.wait()
        first.cleanup()


def test_a_file_read_in_parts_is_listed_with_the_ranges_of_its_chunks_read(daemon: Daemon, tmp_path: Path):
    chunk = 64 << 10
    data = random.Random(5).randbytes(16 * chunk)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "lib.so").write_bytes(data)
    lazyfly("build", tmp_path / "tree", "-o", tmp_path / "layout", "--chunk-size", "64KiB")
    assert daemon.add("lib", tmp_path / "layout")[0] == 201
    with open(daemon.mountpoint / "lib" / "lib.so", "rb") as f:
        assert os.pread(f.fileno(), 100, 5 * chunk + 7) == data[5 * chunk + 7 :][:100]
    (line,) = lazyfly("accessed", "--api-socket", daemon.socket, "lib").stdout.splitlines()
    path, spans = line.split("\t")
    ranges = [tuple(map(int, span.split(":"))) for span in spans.split(",")]
    assert path == "/lib.so" and ranges[0][0] == 5 * chunk  # chunk-aligned, from the chunk read
    assert all(offset % chunk == 0 for offset, _ in ranges)  # the kernel may have read ahead
    assert sum(length for _, length in ranges) < len(data)


def test_the_files_read_are_listed_in_first_read_order_as_a_prefetch_list(
    daemon: Daemon, images: dict[str, tuple[Path, Path]]
):
    _, layout = images["alpha"]
    assert daemon.add("alpha", layout)[0] == 201
    order = ["dir/file1.bin", "hello.txt", "dir/sub/file0.bin", "hello.txt"]
    for rel in order:
        (daemon.mountpoint / "alpha" / rel).read_bytes()
    os.stat(daemon.mountpoint / "alpha" / "dir" / "file3.bin")  # looked at, never read
    out = lazyfly("accessed", "--api-socket", daemon.socket, "alpha").stdout
    assert out.splitlines() == ["/dir/file1.bin", "/hello.txt", "/dir/sub/file0.bin"]
    assert lazyfly("accessed", "--api-socket", daemon.socket, "nope", check=False).returncode == 1
