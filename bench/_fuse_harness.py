"""FUSE benchmark helpers: incompressible data files, mounts that always go away, blob URLs, random
reads, and a reference download that does a verifying cache's work without FUSE.

Rules kept: every mount made here is unmounted when its context ends, even on error (`lazyfly
umount`, then `umount -l` if that fails, so a dead daemon never leaves a hanging mountpoint); the
random-read pass starts with the page cache dropped, like every timed pass of `_harness`.
"""

import contextlib
import http.client
import json
import os
import queue
import random
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from _harness import LAZYFLY, drop_caches

from lazyfly.digest import blake3_digest
from lazyfly.format.oci_image import BLOB_MEDIA_TYPE

MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
_WRITE_BLOCK = 16 << 20


def write_random_file(path: Path, size: int, seed: int) -> None:
    """Write `size` pseudo-random bytes (incompressible: a lazyfly blob stores them raw) to `path`."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        left = size
        while left:
            block = min(left, _WRITE_BLOCK)
            out.write(rng.randbytes(block))
            left -= block


def lazyfly_run(*args: object) -> str:
    """Run `lazyfly ARGS` and return its stdout; raise with its stderr when it fails."""
    result = subprocess.run([str(LAZYFLY), *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"lazyfly {' '.join(map(str, args))} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


def unmount(point: Path) -> None:
    """Unmount `point` with `lazyfly umount`; detach it with `umount -l` when that fails."""
    result = subprocess.run([str(LAZYFLY), "umount", str(point)], capture_output=True, text=True)
    if result.returncode != 0:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@dataclass(frozen=True)
class Mount:
    """A mount made by `mounted`: where, how long the command took, and the daemon serving it."""

    point: Path
    seconds: float
    daemon_pid: int


@contextlib.contextmanager
def mounted(image: str | Path, point: Path, cache: Path, *flags: str) -> Iterator[Mount]:
    """Mount `image` on `point` with its chunk cache in `cache` for the context's length."""
    point.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        out = lazyfly_run("mount", image, point, "--cache-dir", cache, *flags)
        seconds = time.perf_counter() - start
        found = re.search(r"daemon pid (\d+)", out)
        if found is None:
            raise RuntimeError(f"lazyfly mount did not name its daemon: {out.strip()}")
        yield Mount(point, seconds, int(found.group(1)))
    finally:
        unmount(point)


@dataclass(frozen=True)
class Blob:
    """A data blob of an image in a registry: its plain GET URL and its size in bytes."""

    url: str
    size: int


def data_blobs(registry_url: str, repo: str, tag: str) -> list[Blob]:
    """The lazyfly data-blob layers of `repo:tag` in the registry at `registry_url`."""
    request = urllib.request.Request(
        f"{registry_url}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        manifest = json.load(response)
    return [
        Blob(f"{registry_url}/v2/{repo}/blobs/{layer['digest']}", layer["size"])
        for layer in manifest["layers"]
        if layer["mediaType"] == BLOB_MEDIA_TYPE
    ]


@dataclass(frozen=True)
class RandomReads:
    """Latencies (seconds) of random reads of one block each, and the wall time of the whole pass."""

    latencies: list[float]
    seconds: float

    @property
    def iops(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def merged(self, other: "RandomReads") -> "RandomReads":
        return RandomReads(self.latencies + other.latencies, self.seconds + other.seconds)


def random_reads(path: Path, count: int, block: int, seed: int) -> RandomReads:
    """`count` preads of `block` bytes at random block-aligned offsets of `path`, page cache dropped."""
    size = path.stat().st_size
    rng = random.Random(seed)
    offsets = [rng.randrange(size // block) * block for _ in range(count)]
    drop_caches()
    latencies: list[float] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        clock = time.perf_counter
        begin = clock()
        for offset in offsets:
            start = clock()
            data = os.pread(fd, block, offset)
            latencies.append(clock() - start)
            if len(data) != block:
                raise RuntimeError(f"short read of {path} at {offset}: {len(data)} of {block} bytes")
        seconds = clock() - begin
    finally:
        os.close(fd)
    return RandomReads(latencies, seconds)


def hashed_and_stored_download(url: str, dest: Path, piece: int = 1 << 20) -> float:
    """Download `url` doing only what a verifying cache must: receive, blake3 and store each piece.

    The least work any lazyfly cold read does on this machine: one GET (as curl does), received into
    reused buffers (no page faults), every `piece` bytes hashed with blake3 and written to `dest`
    by a second thread while the next piece arrives; no FUSE, no Python per request. Returns the
    wall seconds from the request to the last write, page cache dropped before.
    """
    parts = urllib.parse.urlsplit(url)
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(8):
        free.put(bytearray(piece))
    received: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
    failures: list[BaseException] = []
    drop_caches()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def hash_and_store() -> None:
        offset = 0
        while (item := received.get()) is not None:
            buffer, length = item
            try:
                view = memoryview(buffer)[:length]
                blake3_digest(view)
                os.pwrite(fd, view, offset)
            except BaseException as error:  # reported by the receiving side
                failures.append(error)
            offset += length
            free.put(buffer)

    start = time.perf_counter()
    storer = threading.Thread(target=hash_and_store)
    storer.start()
    try:
        connection = http.client.HTTPConnection(parts.netloc, timeout=60)
        connection.request("GET", parts.path)
        response = connection.getresponse()
        if response.status != 200 or response.length is None:
            raise RuntimeError(f"GET {url}: {response.status} {response.reason}")
        left = response.length
        while left and not failures:
            buffer = free.get()
            length = min(piece, left)
            view, got = memoryview(buffer), 0
            while got < length:
                n = response.readinto(view[got:length])
                if not n:
                    raise RuntimeError(f"GET {url}: the body ended {left - got} bytes early")
                got += n
            received.put((buffer, length))
            left -= length
        connection.close()
    finally:
        received.put(None)
        storer.join()
        os.close(fd)
    if failures:
        raise RuntimeError(f"storing {url} in {dest} failed: {failures[0]}")
    return time.perf_counter() - start
