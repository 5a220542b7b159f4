"""Fixtures of the fusefs cache tests: a real image built by `lazyfly build`, and a counting backend.

The backend reads the blob file of the built OCI layout with os.pread: real bytes from disk, with
every request recorded so tests can count backend round trips. An optional gate holds requests
until a test releases them, to line up concurrent readers without sleeping.
"""

import contextlib
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from lazyfly.builder.image_source import as_lazy_image, open_local_image
from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.format.layout import BlobInfo, ChunkRef
from lazyfly.fusefs.blob_reader import BlobReader
from lazyfly.range_sink import RangeSink, feed, range_length

LAZYFLY = Path(sys.executable).with_name("lazyfly")
CHUNK = 64 << 10


@dataclass
class BuiltImage:
    """A built single-layer image: its source tree, bootstrap, blob and the blob's file."""

    source: Path
    bootstrap: Bootstrap
    blob: BlobInfo
    blob_path: Path
    files: list[str]

    def refs(self, path: str, offset: int = 0, length: int | None = None) -> list[ChunkRef]:
        inode = self.bootstrap.inode(self.bootstrap.resolve(path))
        return self.bootstrap.chunks_in_range(inode, offset, inode.size if length is None else length)

    def all_refs(self) -> list[ChunkRef]:
        return [ref for path in self.files for ref in self.refs(path)]


@dataclass
class CountingBackend:
    """A BlobBackend over blob files on disk that records each request (offset, length, prefetch)."""

    paths: dict[str, Path]
    name: str = "counting"
    gate: trio.Event | None = None
    requests: list[tuple[int, int, bool]] = field(default_factory=list)
    fail_with: Exception | None = None

    @property
    def bytes(self) -> int:
        return sum(length for _, length, _ in self.requests)

    async def read_range_into(
        self, digest: str, offset: int, sink: RangeSink, *, prefetch: bool = False
    ) -> None:
        length = range_length(sink)
        self.requests.append((offset, length, prefetch))
        failure = self.fail_with  # decided when the request is made, raised after the gate
        await trio.lowlevel.checkpoint()
        if self.gate is not None:
            await self.gate.wait()
        if failure is not None:
            raise failure
        fd = os.open(self.paths[digest], os.O_RDONLY)
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        await trio.to_thread.run_sync(feed, sink, data)

    async def aclose(self) -> None:
        return None


def _make_tree(root: Path) -> list[str]:
    """Several multi-chunk files (random, compressible, with a zero chunk) and some small ones."""
    rng = random.Random(7)
    text = b"".join(b"line %d of a compressible file\n" % i for i in range(40000))
    contents = {
        "random-700k": rng.randbytes(700 << 10),
        "odd-size": rng.randbytes(300_001),
        "text": text[: (1 << 20) + 12345],
        "holey": rng.randbytes(5000) + bytes(3 * CHUNK) + rng.randbytes(CHUNK + 77),
        "mixed": b"".join(rng.randbytes(4096) + bytes(8192) + text[:20000] for _ in range(20)),
        "small/a": b"a" * 10,
        "small/b": rng.randbytes(3000),
        "small/c": text[:9000],
        "small/deep/d": rng.randbytes(CHUNK),
    }
    for name, data in contents.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return ["/" + name for name in contents]


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    base = tmp_path_factory.mktemp("fusefs-image")
    source = base / "src"
    files = _make_tree(source)
    out = base / "oci"
    proc = subprocess.run(
        [str(LAZYFLY), "build", str(source), "-o", str(out), "--chunk-size", "64KiB"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with open_local_image(out) as local:
        image = as_lazy_image(local)
        (blob,) = image.bootstrap.blobs()
        return BuiltImage(source, image.bootstrap, blob, local.layout.blob_path(blob.digest), files)


@pytest.fixture
def backend(built_image: BuiltImage) -> CountingBackend:
    return CountingBackend({built_image.blob.digest: built_image.blob_path})


@pytest.fixture
def counting_backend() -> type[CountingBackend]:
    """The backend class, for tests that need a second one or one over another blob file."""
    return CountingBackend


async def read_file(reader: BlobReader, image: BuiltImage, path: str, offset: int, length: int) -> bytes:
    """Read a file range as fusefs does: chunks from the reader, zeros where no ref covers."""
    inode = image.bootstrap.inode(image.bootstrap.resolve(path))
    length = max(0, min(length, inode.size - offset))
    refs = image.bootstrap.chunks_in_range(inode, offset, length)
    out = bytearray(length)
    for ref, data in zip(refs, await reader.read_chunks(refs), strict=True):
        lo, hi = max(offset, ref.file_offset), min(offset + length, ref.file_offset + len(data))
        out[lo - offset : hi - offset] = data[lo - ref.file_offset : hi - ref.file_offset]
    return bytes(out)


@pytest.fixture
def file_reader() -> Callable[[BlobReader, BuiltImage, str, int, int], Awaitable[bytes]]:
    return read_file


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, to fill the cache's disk; skipped where mounting is not allowed."""
    where = tmp_path / "tiny"
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        with contextlib.suppress(OSError):
            shutil.rmtree(where)
