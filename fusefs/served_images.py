"""The images a multi-image fusefs daemon serves: added, removed and closed only through here.

Rules:
- Rule 1: images are added only while the daemon is RUNNING, each load bounded by
  DEFAULT_ADD_IMAGE_TIMEOUT; an id is taken from the moment its add starts, so a concurrent add of
  the same id gets AlreadyExists, and an image loaded but not added is closed.
- Rule 2: a removed image leaves the namespace first (new lookups get ENOENT), then the kernel's
  cached dentry of its directory is invalidated so the directory disappears at once, then the
  daemon waits (bounded) for its running fetches to end, then closes it.
- Rule 3: closing is shielded from cancellation and bounded: a stopping daemon never leaves a
  cache file open and unclean, and never hangs on one.
- Rule 4 (prefetch and read-ahead): each image's prefetch (prefetch.py) and read-ahead workers
  (read_ahead.py) run in the nursery that `serve` owns, under one cancel scope per image, started
  before the image is added (so bad prefetch settings refuse the add), and are cancelled and
  awaited before its image is closed. `serve` runs inside the daemon's root nursery, so a
  stopping daemon cancels every prefetch and read-ahead before `close_all`.
"""

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyfuse3
import trio

from lazyfly.api.fusefs import CacheGcResult
from lazyfly.errors import FailedPrecondition, Unavailable
from lazyfly.fusefs.cache_gc import collect_cache
from lazyfly.fusefs.config import ImageSettings, PrefetchSettings
from lazyfly.fusefs.daemon_state import DaemonLifecycle
from lazyfly.fusefs.errors import ImageExists
from lazyfly.fusefs.image import MountedImage
from lazyfly.fusefs.image_loader import load_image
from lazyfly.fusefs.namespace import ROOT_INODE, Namespace
from lazyfly.fusefs.prefetch import PrefetchStats, run_prefetch
from lazyfly.oci.locate import ImageLocation

log = logging.getLogger(__name__)

DEFAULT_ADD_IMAGE_TIMEOUT = 300.0  # manifest and bootstrap fetch, cache files opened
DEFAULT_DRAIN_TIMEOUT = 10.0  # a removed image's running fetches may finish this long
DEFAULT_CLOSE_TIMEOUT = 30.0  # fdatasync of the cache files and backend shutdown
DRAIN_POLL_INTERVAL = 0.05


@dataclass
class _Prefetch:
    """One image's running prefetch: how to stop it and know it stopped."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    stats: PrefetchStats = field(default_factory=PrefetchStats)


class ServedImages:
    """The images of a multi-image daemon: add, remove and close them; the API's only way in."""

    def __init__(
        self, namespace: Namespace, cache_dir: Path, mountpoint: Path, lifecycle: DaemonLifecycle
    ) -> None:
        self.namespace = namespace
        self.cache_dir = cache_dir
        self.mountpoint = mountpoint
        self.lifecycle = lifecycle
        self._adding: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._prefetches: dict[str, _Prefetch] = {}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the images' background tasks until cancelled (Rule 4); ready once adds can start them."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def __iter__(self) -> Iterator[MountedImage]:
        return iter(self.namespace)

    def get(self, image_id: str) -> MountedImage | None:
        """The image served as `image_id`, if any."""
        return self.namespace.by_id(image_id)

    async def add(
        self, image_id: str, location: ImageLocation, settings: ImageSettings, slot: int = 0
    ) -> MountedImage:
        """Load the image at `location` and serve it as the subdirectory `image_id` (in `slot`)."""
        if not self.lifecycle.accepts_images:
            raise Unavailable(f"image {image_id}: the daemon is {self.lifecycle.state.value}, not RUNNING")
        if image_id in self._adding or self.namespace.by_id(image_id) is not None:
            raise ImageExists(f"image {image_id} is mounted already (or being added)")
        self._adding.add(image_id)
        try:
            with trio.move_on_after(DEFAULT_ADD_IMAGE_TIMEOUT) as scope:
                image = await load_image(self.namespace, image_id, location, self.cache_dir, settings, slot)
            if scope.cancelled_caught:
                raise Unavailable(
                    f"image {image_id}: {location} not loaded within {DEFAULT_ADD_IMAGE_TIMEOUT:g} s"
                )
            try:
                await self._start_prefetch(image, settings.prefetch)
                self.namespace.add(image)
            except BaseException:
                await self._stop_prefetch(image_id)
                await _close(image)
                raise
        finally:
            self._adding.discard(image_id)
        log.info("serving %s as %s", location, self.mountpoint / image_id)
        return image

    async def remove(self, image_id: str) -> None:
        """Stop serving `image_id`, make its directory vanish from the kernel's cache, close it."""
        image = self.namespace.remove(image_id)
        pyfuse3.invalidate_entry_async(ROOT_INODE, os.fsencode(image_id), ignore_enoent=True)
        log.info("removed image %s", image_id)
        await self._stop_prefetch(image_id)
        await _close(image)

    async def close_all(self) -> None:
        """Remove and close every image (the daemon is stopping; the mount is gone)."""
        for image in list(self.namespace):
            self.namespace.remove(image.image_id)
            await self._stop_prefetch(image.image_id)
            await _close(image)

    async def collect_cache(self) -> CacheGcResult:
        """Delete the cache files of blobs no served image reads and the bootstraps of images no
        longer served (cache_gc.py)."""
        if self._adding:
            raise FailedPrecondition(
                f"images are being added ({', '.join(sorted(self._adding))}): collect later"
            )
        blobs = {reader.blob.digest for reader in self.namespace.readers.readers()}
        bootstraps = {image.manifest_digest for image in self.namespace}
        result = await trio.to_thread.run_sync(collect_cache, self.cache_dir, blobs, bootstraps)
        summary = result.summary()
        if summary is not None:
            log.info("cache: deleted %s", summary)
        return result

    def prefetch_stats(self, image_id: str) -> PrefetchStats | None:
        """The running or finished prefetch counters of `image_id`, if it is served."""
        entry = self._prefetches.get(image_id)
        return entry.stats if entry is not None else None

    async def _start_prefetch(self, image: MountedImage, settings: PrefetchSettings) -> None:
        if self._nursery is None:
            raise Unavailable(f"image {image.image_id}: the daemon is not serving images")
        await self._nursery.start(self._run_prefetch, image, settings)

    async def _run_prefetch(
        self, image: MountedImage, settings: PrefetchSettings, *, task_status: trio.TaskStatus[None]
    ) -> None:
        entry = _Prefetch()
        self._prefetches[image.image_id] = entry
        try:
            with entry.scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(image.read_ahead.serve)
                    await run_prefetch(image, settings, stats=entry.stats, task_status=task_status)
        finally:
            entry.done.set()

    async def _stop_prefetch(self, image_id: str) -> None:
        entry = self._prefetches.pop(image_id, None)
        if entry is None:
            return
        entry.scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(DEFAULT_DRAIN_TIMEOUT):
            await entry.done.wait()


async def _close(image: MountedImage) -> None:
    """Wait (bounded) for the image's fetches to end, then close it, shielded from cancellation."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(DEFAULT_DRAIN_TIMEOUT) as draining:
            # BlobReader has no "drained" event; the poll is bounded by the drain timeout.
            while any(reader.stats.inflight for reader in image.readers):  # noqa: ASYNC110
                await trio.sleep(DRAIN_POLL_INTERVAL)
        if draining.cancelled_caught:
            log.warning("image %s: closing with fetches still running", image.image_id)
        with trio.move_on_after(DEFAULT_CLOSE_TIMEOUT) as closing:
            await image.aclose()
        if closing.cancelled_caught:
            log.warning("image %s: not closed within %g s", image.image_id, DEFAULT_CLOSE_TIMEOUT)
