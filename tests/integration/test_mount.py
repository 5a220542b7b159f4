"""`lazyfly mount`: the corner-case tree mounted from an OCI layout and from a registry."""

import errno
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fixtures.layouts import only_manifest
from fixtures.mounts import Mounts
from fixtures.registry import RunningRegistry
from fixtures.trees import compare_trees
from integration.cli import lazyfly

pytestmark = pytest.mark.integration
CHUNK = 64 << 10  # the chunk size the corner_tree fixture is made for


@pytest.fixture(scope="module")
def layout(corner_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("image") / "layout"
    lazyfly("build", corner_tree, "-o", out, "--chunk-size", "64KiB")
    return out


def test_mounted_tree_equals_its_source(layout: Path, corner_tree: Path, mounts: Mounts):
    point = mounts.mount(layout)
    assert compare_trees(corner_tree, point) == []


def test_random_ranges_read_like_the_source(layout: Path, corner_tree: Path, mounts: Mounts):
    point = mounts.mount(layout)
    rng = random.Random(7)
    files = [p for p in corner_tree.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size]
    for _ in range(300):
        src = rng.choice(files)
        size = src.stat().st_size
        offset = rng.randrange(size)
        length = rng.choice([1, 4096, CHUNK, 3 * CHUNK + 17, size])
        with open(src, "rb") as a, open(point / src.relative_to(corner_tree), "rb") as b:
            assert os.pread(b.fileno(), length, offset) == os.pread(a.fileno(), length, offset)


def test_registry_image_mounts_and_reads(
    layout: Path, corner_tree: Path, registry: RunningRegistry, mounts: Mounts
):
    ref = f"{registry.host}/corner:v1"
    lazyfly("push", layout, ref, "--plain-http")
    point = mounts.mount(ref, "--plain-http")
    assert compare_trees(corner_tree, point) == []


def test_restart_reuses_the_cache(layout: Path, corner_tree: Path, tmp_path: Path, mounts: Mounts):
    copy = tmp_path / "layout-copy"
    subprocess.run(["cp", "-a", layout, copy], check=True)
    point = mounts.mount(copy)
    assert compare_trees(corner_tree, point) == []  # reads every byte: all chunks cached
    lazyfly("umount", point)
    manifest = only_manifest(copy)
    for layer in manifest["layers"][:-1]:  # the data blobs are gone: only the cache can serve
        (copy / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")).unlink()
    point = mounts.mount(copy)
    assert compare_trees(corner_tree, point) == []


def test_corrupt_chunk_reads_as_eio_never_wrong_bytes(layout: Path, tmp_path: Path, mounts: Mounts):
    copy = tmp_path / "layout-copy"
    subprocess.run(["cp", "-a", layout, copy], check=True)
    blob = copy / "blobs" / "sha256" / only_manifest(copy)["layers"][0]["digest"].removeprefix("sha256:")
    fd = os.open(blob, os.O_RDWR)
    try:
        os.pwrite(fd, bytes([os.pread(fd, 1, 100)[0] ^ 0xFF]), 100)
    finally:
        os.close(fd)
    point = mounts.mount(copy)
    failures = 0
    for path in point.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                path.read_bytes()
            except OSError as exc:
                assert exc.errno == errno.EIO
                failures += 1
    assert failures >= 1


def test_killed_daemon_is_recovered_by_umount_and_remount(layout: Path, mounts: Mounts):
    point = mounts.mount(layout)
    os.kill(mounts.pids[point], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.statvfs(point)
        except OSError as exc:
            assert exc.errno in (errno.ENOTCONN, errno.ECONNABORTED)
            break
        time.sleep(0.05)
    assert "detached" in lazyfly("umount", point).stdout
    point = mounts.mount(layout)
    assert (point / "sizes").is_dir()


def test_mount_of_a_non_lazyfly_image_fails_clearly(tmp_path: Path):
    proc = lazyfly("mount", tmp_path, tmp_path / "mnt", "--cache-dir", tmp_path / "c", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


def test_killed_registry_gives_eio_not_a_hang(layout: Path, tmp_path: Path, mounts: Mounts):
    from fixtures.registry import start_registry

    running = start_registry(tmp_path)
    try:
        ref = f"{running.host}/corner:v1"
        lazyfly("push", layout, ref, "--plain-http")
        point = mounts.mount(ref, "--plain-http", "--prefetch", "none")
    finally:
        running.stop()
    started = time.monotonic()
    with pytest.raises(OSError) as excinfo:
        (point / "large" / "big.bin").read_bytes()
    assert excinfo.value.errno == errno.EIO
    assert time.monotonic() - started < 120  # bounded retries, not a hang (not a speed claim)


def test_an_image_pinned_by_digest_mounts_again_from_its_cache_while_the_registry_is_down(
    layout: Path, corner_tree: Path, tmp_path: Path, mounts: Mounts
):
    from fixtures.registry import start_registry

    running = start_registry(tmp_path)
    try:
        pushed = lazyfly("push", layout, f"{running.host}/corner:v1", "--plain-http").stdout
        digest = re.search(r"@(sha256:[0-9a-f]{64})", pushed).group(1)
        pinned = f"{running.host}/corner@{digest}"
        point = mounts.mount(pinned, "--plain-http", "--prefetch", "none")
        assert compare_trees(corner_tree, point) == []  # every chunk read, so every chunk cached
        lazyfly("umount", point)
    finally:
        running.stop()
    point = mounts.mount(pinned, "--plain-http", "--prefetch", "none")
    assert compare_trees(corner_tree, point) == []
    by_tag = lazyfly(
        "mount",
        f"{running.host}/corner:v1",
        tmp_path / "by-tag",
        "--plain-http",
        "--cache-dir",
        tmp_path / "cache",
        check=False,
    )
    assert by_tag.returncode != 0 and "Traceback" not in by_tag.stderr  # a tag needs the registry


def test_full_cache_disk_still_serves_reads(layout: Path, corner_tree: Path, tmp_path: Path, mounts: Mounts):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small], check=True)
    try:
        point = mounts.mount(layout, cache="small/cache")
        big = point / "large" / "big.bin"  # 8 MiB: far more than the cache can hold
        assert big.read_bytes() == (corner_tree / "large" / "big.bin").read_bytes()
    finally:
        mounts.cleanup()
        subprocess.run(["umount", "-l", small], check=False)


def test_the_mount_command_returns_with_read_ahead_already_widened(layout: Path, mounts: Mounts):
    from lazyfly.fusefs.config import DaemonSettings
    from lazyfly.fusefs.mountpoint import get_read_ahead

    point = mounts.mount(layout)
    assert get_read_ahead(point) == DaemonSettings().read_ahead_kb  # a file opened now reads in big requests


def test_a_large_file_read_sequentially_from_a_registry_equals_its_source(
    tmp_path: Path, registry: RunningRegistry, mounts: Mounts
):
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(11).randbytes(40 << 20)  # long enough for read-ahead windows to grow
    (src / "big.bin").write_bytes(data)
    (src / "other.bin").write_bytes(data[: 3 << 20])
    lazyfly("build", src, "-o", tmp_path / "layout")
    ref = f"{registry.host}/sequential:v1"
    lazyfly("push", tmp_path / "layout", ref, "--plain-http")
    point = mounts.mount(ref, "--plain-http", "--prefetch", "none")
    rng = random.Random(3)
    with open(point / "big.bin", "rb") as sequential, open(point / "big.bin", "rb") as scattered:
        for offset in range(0, len(data), 1 << 20):
            assert sequential.read(1 << 20) == data[offset : offset + (1 << 20)], offset
            at = rng.randrange(len(data))  # a random reader in between, sharing the flights
            assert os.pread(scattered.fileno(), 4096, at) == data[at : at + 4096], at
    assert (point / "other.bin").read_bytes() == data[: 3 << 20]


def _cached_bytes(cache: Path) -> int:
    """Bytes the cache's sparse data files hold on disk (what was fetched so far)."""
    return sum(path.stat().st_blocks * 512 for path in (cache / "blobs").glob("*.data"))


def _read_head_sequentially(path: Path, length: int) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.tell() < length:
            assert f.read(256 << 10)


@pytest.mark.parametrize(("read_ahead", "ahead_expected"), [("64MiB", True), ("0", False)])
def test_the_read_ahead_setting_decides_whether_a_sequential_reader_is_fetched_ahead_of(
    tmp_path: Path, mounts: Mounts, read_ahead: str, ahead_expected: bool
):
    source = tmp_path / "src"
    source.mkdir()
    (source / "weights.bin").write_bytes(random.Random(5).randbytes(32 << 20))
    out = tmp_path / "layout"
    lazyfly("build", source, "-o", out, "--chunk-size", "64KiB", "--compressor", "none")
    point = mounts.mount(out, "--prefetch", "none", "--merge-limit", "64KiB", "--read-ahead", read_ahead)
    read = 8 << 20
    _read_head_sequentially(point / "weights.bin", read)
    # What the reads themselves fetch: the kernel's own read-ahead on top (its window is 1 MiB on
    # the mount, and the next one is asked for before the reader reaches the end of the last).
    on_demand = read + (2 << 20) + (64 << 10)
    if ahead_expected:
        deadline = time.monotonic() + 30
        while _cached_bytes(tmp_path / "cache") <= on_demand + (4 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _cached_bytes(tmp_path / "cache") > on_demand + (4 << 20)
    else:
        time.sleep(0.5)  # time enough for read-ahead to have started, were it on
        assert _cached_bytes(tmp_path / "cache") <= on_demand
