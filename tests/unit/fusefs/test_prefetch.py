"""Prefetch: the planner on real built images, the token bucket on fake and mock clocks, and the
worker on real BlobReaders over a real OCI layout (through a counting wrapper of the backend)."""

import logging
import random
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from lazyfly.backend.oci_layout import OciLayoutBackend
from lazyfly.builder.image_source import as_lazy_image, open_local_image
from lazyfly.digest import blake3_digest
from lazyfly.errors import InvalidArgument, Unavailable
from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.format.layout import ChunkRef
from lazyfly.fusefs.blob_reader import DEFAULT_MERGE_LIMIT
from lazyfly.fusefs.config import PrefetchSettings
from lazyfly.fusefs.image import MountedImage
from lazyfly.fusefs.prefetch import PrefetchStats, TokenBucket, plan_batches, plan_prefetch, run_prefetch
from lazyfly.fusefs.reader_pool import ReaderPool
from lazyfly.range_sink import RangeSink, range_length

LAZYFLY = Path(sys.executable).with_name("lazyfly")


@dataclass
class Built:
    source: Path
    out: Path
    bootstrap: Bootstrap


def _build(source: Path, out: Path, *extra: str) -> Built:
    cmd = [str(LAZYFLY), "build", str(source), "-o", str(out), "--chunk-size", "64KiB", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open_local_image(out) as local:
        return Built(source, out, as_lazy_image(local).bootstrap)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Built, Built]:
    """One image with a prefetch table and a shared file; one of two blobs (via a chunk dictionary)."""
    base = tmp_path_factory.mktemp("prefetch")
    rng = random.Random(3)
    shared = rng.randbytes(100 << 10)
    files = {
        "app/bin/main": rng.randbytes(200 << 10),
        "app/lib/a.so": shared,
        "app/lib/b.so": rng.randbytes(70 << 10),
        "data/big": rng.randbytes(600 << 10),
        "data/copy": shared,
        "etc/conf": b"x=1\n" * 1000,
        "empty": b"",
    }
    src = base / "src"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    (src / "link").symlink_to("/data/big")
    (base / "list").write_text("/etc/conf\n/app/lib\n")
    first = _build(src, base / "out", "--prefetch-list", str(base / "list"))
    src2 = base / "src2"
    (src2 / "lib").mkdir(parents=True)
    (src2 / "lib/a.so").write_bytes(shared)
    (src2 / "new").write_bytes(rng.randbytes(150 << 10))
    second = _build(src2, base / "out2", "--chunk-dict", str(base / "out"))
    assert len(second.bootstrap.blobs()) == 2
    return first, second


def _refs_of(boot: Bootstrap, *paths: str) -> list[ChunkRef]:
    """Chunk refs of the regular files at or below `paths`, found with Bootstrap.walk."""
    out = []
    for want in paths:
        for path, inode in boot.walk():
            under = path == want.encode() or path.startswith(want.encode().rstrip(b"/") + b"/")
            if under and stat.S_ISREG(inode.mode):
                out.extend(boot.chunks(inode))
    return out


def _once(refs: list[ChunkRef]) -> list[tuple[int, ChunkRef]]:
    seen: dict[tuple[int, int], ChunkRef] = {}
    for ref in refs:
        seen.setdefault((ref.blob_index, ref.uncompressed_offset), ref)
    return [(ref.blob_index, ref) for ref in seen.values()]


def test_plan_puts_named_files_first_then_the_table_in_blob_order_each_chunk_once(images, caplog):
    boot = images[0].bootstrap
    settings = PrefetchSettings(mode="table", files=["/data/big", "/missing", "/app", "/link"])
    with caplog.at_level(logging.WARNING):
        plan = plan_prefetch(boot, settings)
    assert "/missing" in caplog.text
    named_first = _once(_refs_of(boot, "/data/big", "/app"))
    assert plan[: len(named_first)] == named_first
    assert plan[len(named_first) :] == _gathered(boot, _once(_refs_of(boot, "/etc/conf")))
    named = plan_prefetch(boot, PrefetchSettings(mode="none", files=["/app"]))
    assert [boot.resolve(p) for p in ("/etc/conf", "/app/lib")] == boot.prefetch()
    assert named == _once(_refs_of(boot, "/app/bin/main", "/app/lib/a.so", "/app/lib/b.so"))
    # a file named again, itself after its directory, adds nothing
    assert plan_prefetch(boot, PrefetchSettings(mode="none", files=["/app", "/app/lib/a.so"])) == named
    assert plan_prefetch(boot, PrefetchSettings(mode="none")) == []
    table = plan_prefetch(boot, PrefetchSettings(mode="table"))
    assert table == _gathered(boot, _once(_refs_of(boot, "/etc/conf", "/app/lib")))
    # /data/copy was stored before /app/lib/a.so (the build walks data/ first): the listed file's
    # copy of their shared chunk is stored again in the prefetch blob, so the table fetches all.
    assert [blob.prefetch for blob in boot.blobs()] == [False, True]
    assert {ref.blob_index for ref in _refs_of(boot, "/data/copy")} == {0}
    assert {ref.blob_index for ref in _refs_of(boot, "/etc/conf", "/app/lib")} == {1}
    with pytest.raises(InvalidArgument):
        plan_prefetch(boot, PrefetchSettings(mode="everything"))


def _gathered(boot: Bootstrap, plan: list[tuple[int, ChunkRef]]) -> list[tuple[int, ChunkRef]]:
    """The entries in the prefetch blob, in blob order: what a table plan holds."""
    prefetch_blobs = {i for i, blob in enumerate(boot.blobs()) if blob.prefetch}
    return sorted((e for e in plan if e[0] in prefetch_blobs), key=lambda e: (e[0], e[1].compressed_offset))


def test_plan_all_takes_named_files_then_every_used_chunk_in_blob_order(images):
    boot = images[1].bootstrap
    plan = plan_prefetch(boot, PrefetchSettings(mode="all", files=["/new"]))
    first = _once(_refs_of(boot, "/new"))
    assert plan[: len(first)] == first
    rest = [(b, r.uncompressed_offset) for b, r in plan[len(first) :]]
    assert rest == sorted(rest) and {b for b, _ in rest} == {1}  # /new is all of blob 0
    unnamed = [(b, r.uncompressed_offset) for b, r in plan_prefetch(boot, PrefetchSettings(mode="all"))]
    assert unnamed == sorted(unnamed) and {b for b, _ in unnamed} == {0, 1}
    keys = sorted((b, r.uncompressed_offset) for b, r in plan)
    assert keys == sorted((b, r.uncompressed_offset) for b, r in _once(_refs_of(boot, "/")))
    assert len(keys) == len(set(keys)) == len(plan)


def test_batches_keep_plan_order_and_split_at_a_blob_change_or_the_size_limit(images):
    plan = plan_prefetch(images[1].bootstrap, PrefetchSettings(mode="all"))
    limit = 150 << 10
    batches = plan_batches(plan, limit)
    assert [(i, r) for i, refs in batches for r in refs] == plan
    for blob_index, refs in batches:
        assert all(r.blob_index == blob_index for r in refs)
        assert len(refs) == 1 or sum(r.compressed_size for r in refs) <= limit
    assert len(plan_batches(plan)) == 2  # one per blob: each holds under 1 MiB


def test_token_bucket_charges_debt_and_refills_up_to_the_burst():
    now = [0.0]
    bucket = TokenBucket(1000, lambda: now[0])
    assert bucket.reserve(600) == 0.0
    assert bucket.reserve(600) == pytest.approx(0.2)  # 200 in debt at 1000/s
    now[0] = 0.2
    assert bucket.reserve(3000) == pytest.approx(3.0)  # bigger than the burst: waits, still passes
    now[0] = 100.0  # a long idle refills to the burst, no further
    assert bucket.reserve(1000) == 0.0
    assert bucket.reserve(1) > 0
    with pytest.raises(InvalidArgument):
        TokenBucket(0, lambda: 0.0)


def test_token_bucket_admits_its_rate_per_virtual_second():
    admitted: list[tuple[float, int]] = []

    async def main() -> None:
        bucket = TokenBucket(1000, trio.current_time)
        with trio.move_on_after(10.05):
            while True:
                await trio.sleep(bucket.reserve(100))
                admitted.append((trio.current_time(), 100))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert sum(n for _, n in admitted) == 1000 + 10 * 1000  # the burst, then the rate
    for second in range(1, 10):
        assert sum(n for t, n in admitted if second < t <= second + 1) == 1000


class CountingBackend:
    """OciLayoutBackend with every request recorded; optionally failing prefetch reads or hooked."""

    def __init__(self, inner: OciLayoutBackend, *, fail_prefetch: bool = False) -> None:
        self.inner = inner
        self.name = "counting"
        self.stats = inner.stats
        self.fail_prefetch = fail_prefetch
        self.requests: list[tuple[int, int, bool]] = []
        self.on_request: Callable[[int], Awaitable[None]] | None = None
        self.active = self.peak = 0  # requests running now, and at most at once

    async def read_range_into(
        self, digest: str, offset: int, sink: RangeSink, *, prefetch: bool = False
    ) -> None:
        async with self._recorded(digest, offset, range_length(sink), prefetch):
            await self.inner.read_range_into(digest, offset, sink, prefetch=prefetch)

    @asynccontextmanager
    async def _recorded(self, digest: str, offset: int, length: int, prefetch: bool) -> AsyncIterator[None]:
        self.requests.append((offset, length, prefetch))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.on_request is not None:
                await self.on_request(len(self.requests))
            if prefetch and self.fail_prefetch:
                raise Unavailable(f"blob {digest} at {offset}: prefetch refused by the test")
            yield
        finally:
            self.active -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def _mount(built: Built, cache: Path, **kw: bool) -> tuple[MountedImage, CountingBackend]:
    backend = CountingBackend(OciLayoutBackend(built.out), **kw)
    pool = ReaderPool()
    pool.hold_backend(backend)
    readers = [pool.acquire(cache, blob, backend, DEFAULT_MERGE_LIMIT) for blob in built.bootstrap.blobs()]
    return MountedImage("img", 0, built.bootstrap, readers, backend, pool), backend


async def _check_all_files(image: MountedImage, source: Path) -> None:
    for path, inode in image.bootstrap.walk():
        if stat.S_ISREG(inode.mode):
            expected = (source / path.decode().lstrip("/")).read_bytes()
            assert await image.read(inode, 0, inode.size + 1) == expected, path


def _run(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("which", [0, 1])
def test_prefetch_all_caches_every_chunk_so_reads_make_no_request(images, tmp_path: Path, which: int):
    built = images[which]

    async def main() -> None:
        image, backend = _mount(built, tmp_path)
        async with trio.open_nursery() as nursery:
            settings = PrefetchSettings(mode="all", workers=3)
            stats = await nursery.start(partial(run_prefetch, batch_limit=128 << 10), image, settings)
        assert backend.peak == 3  # the workers fetch concurrently, no more
        plan = plan_prefetch(built.bootstrap, PrefetchSettings(mode="all"))
        assert stats == PrefetchStats(len(plan), stats.batches, 0, stats.bytes, True)
        assert (
            stats.bytes == sum(r.compressed_size for _, r in plan) == sum(n for _, n, _ in backend.requests)
        )
        assert backend.requests and all(prefetch for *_, prefetch in backend.requests)
        backend.requests.clear()
        await _check_all_files(image, built.source)
        assert backend.requests == []
        await image.aclose()

    _run(main)


def test_a_warm_cache_costs_no_request_and_no_bandwidth_wait(images, tmp_path: Path):
    built = images[0]
    settings = PrefetchSettings(mode="all", bandwidth=100 << 10, workers=2)

    async def main() -> None:
        image, backend = _mount(built, tmp_path)
        start = trio.current_time()
        await run_prefetch(image, settings)
        took = trio.current_time() - start
        total = sum(n for _, n, _ in backend.requests)
        # The cap spreads the fetch: all but one burst waits at 100 KiB/s (virtual time).
        assert (total - settings.bandwidth) / settings.bandwidth <= took <= total / settings.bandwidth + 1
        await image.aclose()
        image, backend = _mount(built, tmp_path)  # reopened: the cache is reused
        start = trio.current_time()
        stats = PrefetchStats()
        await run_prefetch(image, settings, stats=stats)
        assert backend.requests == [] and trio.current_time() == start
        assert stats.finished and stats.batches == 0 and stats.bytes == 0
        await image.aclose()

    _run(main)


def test_cancelling_midway_stops_every_task_and_marks_only_verified_chunks(images, tmp_path: Path):
    built = images[0]

    async def main() -> None:
        image, backend = _mount(built, tmp_path)
        settings = PrefetchSettings(mode="all", workers=2)  # small batches: many requests to stop between
        with trio.CancelScope() as scope:

            async def cancel_at_fifth(n: int) -> None:
                if n == 5:
                    scope.cancel()
                await trio.lowlevel.checkpoint()

            backend.on_request = cancel_at_fifth
            await run_prefetch(image, settings, batch_limit=64 << 10)
        assert scope.cancelled_caught
        made = len(backend.requests)
        await trio.sleep(60)
        await trio.testing.wait_all_tasks_blocked()
        assert len(backend.requests) == made
        assert all(reader.stats.inflight == 0 for reader in image.readers)
        plan = plan_prefetch(built.bootstrap, settings)
        placed = [(image.readers[i], ref) for i, ref in plan]
        ready = [(reader, ref) for reader, ref in placed if reader.cache.is_ready(ref.uncompressed_offset)]
        assert 0 < len(ready) < len(plan)
        for reader, ref in ready:  # a set bit vouches for the bytes: they match the chunk's digest
            data = reader.cache.read(ref.uncompressed_offset, ref.uncompressed_size)
            assert blake3_digest(data) == ref.digest
        backend.on_request = None
        await _check_all_files(image, built.source)
        await image.aclose()

    _run(main)


def test_a_failing_backend_is_counted_and_does_not_raise(images, tmp_path: Path, caplog):
    built = images[1]

    async def main() -> None:
        image, _ = _mount(built, tmp_path, fail_prefetch=True)
        stats = PrefetchStats()
        with caplog.at_level(logging.WARNING):
            await run_prefetch(image, PrefetchSettings(mode="all", workers=2), stats=stats)
        batches = plan_batches(plan_prefetch(built.bootstrap, PrefetchSettings(mode="all")))
        assert stats.failures == len(batches) and stats.batches == 0 and stats.bytes == 0 and stats.finished
        assert "prefetch refused by the test" in caplog.text
        assert all(r.cache.map.ready_count() == 0 for r in image.readers)
        await _check_all_files(image, built.source)  # on-demand reads still work
        await image.aclose()

    _run(main)


def test_invalid_settings_raise_before_started(images, tmp_path: Path):
    async def main() -> None:
        image, _ = _mount(images[0], tmp_path)
        for bad in (PrefetchSettings(mode="x"), PrefetchSettings(workers=0), PrefetchSettings(bandwidth=-1)):
            async with trio.open_nursery() as nursery:
                with pytest.raises(InvalidArgument):
                    await nursery.start(run_prefetch, image, bad)
        await image.aclose()

    _run(main)
