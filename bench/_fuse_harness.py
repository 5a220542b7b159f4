"""FUSE benchmark helpers: incompressible data files, mounts that always go away, blob URLs, random reads.

Rules kept: every mount made here is unmounted when its context ends, even on error (`lazyfly
umount`, then `umount -l` if that fails, so a dead daemon never leaves a hanging mountpoint); the
random-read pass starts with the page cache dropped, like every timed pass of `_harness`.
"""

import contextlib
import json
import os
import random
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from _harness import LAZYFLY, drop_caches

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
