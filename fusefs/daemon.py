"""The FUSE daemons' lifecycles: mount, serve until unmounted or signalled, then clean up.

Two daemons: `serve_image` (`lazyfly mount`: one image at the mount's root) and `serve_daemon`
(`lazyfly fusefs`: many images as subdirectories, added and removed through the HTTP API on a unix
socket (api.py, served_images.py), lifecycle INIT → RUNNING → STOPPING → STOPPED (daemon_state.py)).

The multi-image daemon also hands its FUSE session descriptor out on API-SOCKET.session, and can
start on a live session a dead daemon left (`Takeover`, session_takeover.py): then it restores that
daemon's images in their slots, never mounts, and unmounts on a normal stop.

One root nursery per daemon (STYLE 6): the FUSE loop, the signal watcher and (multi-image) the API
server live in it, and so do each image's prefetch and read-ahead workers; SIGTERM or SIGINT ends
the FUSE loop with pyfuse3.terminate(), and the mount is always released and every image closed
on the way out, whatever ended the loop. The multi-image daemon is STOPPING from the moment the
loop ends (adds are refused) until every image is closed. Both daemons tune malloc to keep freed
buffers for reuse before they serve (allocator.py).
"""

import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from lazyfly.api.fusefs import AddImageRequest, session_socket_path
from lazyfly.errors import LazyflyError
from lazyfly.fusefs.allocator import keep_freed_buffers
from lazyfly.fusefs.api import ApiRoutes, add_image
from lazyfly.fusefs.config import DaemonSettings, ImageSettings
from lazyfly.fusefs.daemon_state import DaemonLifecycle, DaemonState
from lazyfly.fusefs.image_loader import load_image
from lazyfly.fusefs.metrics import build_registry
from lazyfly.fusefs.mountpoint import recover, set_read_ahead, unmount
from lazyfly.fusefs.namespace import Namespace
from lazyfly.fusefs.operations import LazyOperations
from lazyfly.fusefs.prefetch import run_prefetch
from lazyfly.fusefs.served_images import ServedImages
from lazyfly.fusefs.session_takeover import find_session_fd, relay, serve_session_fd, takeover_pair
from lazyfly.http_unix import serve_unix
from lazyfly.oci.locate import ImageLocation

log = logging.getLogger(__name__)
READ_AHEAD_CHECKS = 5
READ_AHEAD_CHECK_INTERVAL = 0.2


def mount_options(settings: DaemonSettings) -> set[str]:
    """FUSE options: read-only, kernel permission checks, and other users allowed when root."""
    options = set(pyfuse3.default_options) | {"fsname=lazyfly", "subtype=lazyfly", "ro"}
    if settings.allow_other:
        options.add("allow_other")
    return options


async def serve_image(
    location: ImageLocation,
    mountpoint: Path,
    daemon: DaemonSettings,
    image: ImageSettings,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount the one image at `location` on `mountpoint` and serve it until unmounted."""
    keep_freed_buffers()
    if recover(mountpoint):
        log.warning("detached a dead FUSE mount left at %s", mountpoint)
    namespace = Namespace(single=True)
    mounted = await load_image(namespace, "image", location, daemon.cache_dir, image)
    try:
        namespace.add(mounted)
        pyfuse3.init(LazyOperations(namespace), str(mountpoint), mount_options(daemon))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_terminate_on_signal)
                nursery.start_soon(raise_read_ahead, mountpoint, daemon.read_ahead_kb)
                # Bad prefetch settings fail here, before the mount is reported ready; planning
                # and fetching go on in the background, cancelled with the nursery below, which
                # ends before mounted.aclose() runs.
                await nursery.start(run_prefetch, mounted, image.prefetch)
                await nursery.start(mounted.read_ahead.serve)
                task_status.started()
                log.info("serving %s on %s", location, mountpoint)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            pyfuse3.close(unmount=True)
    finally:
        await mounted.aclose()


async def raise_read_ahead(mountpoint: Path, kib: int) -> None:
    """Widen the mount's read-ahead once the kernel has taken the daemon's INIT answer.

    INIT caps read-ahead at what the kernel proposed (128 KiB) and happens once the FUSE loop
    runs, so the window is set from inside the loop and checked again for a moment.
    """
    for _ in range(READ_AHEAD_CHECKS):
        await trio.sleep(READ_AHEAD_CHECK_INTERVAL)
        try:
            set_read_ahead(mountpoint, kib)
        except OSError as exc:
            log.warning("cannot set read-ahead of %s: %s", mountpoint, exc)
            return


async def _restore(images: ServedImages, requests: list[AddImageRequest]) -> None:
    """Serve the dead daemon's images in their old slots before the first request is relayed."""
    for request in requests:
        try:
            await add_image(images, request)
        except LazyflyError as exc:
            log.error("cannot restore image %s: %s", request.id, exc)


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


@dataclass
class Takeover:
    """A live FUSE session left by a dead daemon, and the images it served (with their slots)."""

    session_fd: int
    images: list[AddImageRequest]


async def serve_daemon(
    mountpoint: Path,
    api_socket: Path,
    settings: DaemonSettings,
    takeover: Takeover | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount an empty image list on `mountpoint` (or take over the live session), serve the API on
    `api_socket` and the session descriptor beside it, and run until stopped."""
    keep_freed_buffers()
    lifecycle = DaemonLifecycle()
    if takeover is None and recover(mountpoint):
        log.warning("detached a dead FUSE mount left at %s", mountpoint)
    namespace = Namespace(single=False)
    images = ServedImages(namespace, settings.cache_dir, mountpoint, lifecycle)
    routes = ApiRoutes(images, build_registry(lambda: list(namespace), trio.current_time))
    operations, options = LazyOperations(namespace), mount_options(settings)
    try:
        if takeover is None:
            pyfuse3.init(operations, str(mountpoint), options)
            session_fd = find_session_fd()
        else:
            libfuse_end, relay_end = takeover_pair()
            pyfuse3.init(operations, f"/dev/fd/{libfuse_end.fileno()}", options)
            session_fd = takeover.session_fd
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(images.serve)
                await nursery.start(serve_unix, api_socket, routes.handle)
                await nursery.start(serve_session_fd, session_socket_path(api_socket), session_fd)
                nursery.start_soon(_terminate_on_signal)
                lifecycle.move(DaemonState.RUNNING)
                if takeover is None:
                    nursery.start_soon(raise_read_ahead, mountpoint, settings.read_ahead_kb)
                else:
                    await _restore(images, takeover.images)
                    nursery.start_soon(relay, session_fd, relay_end, settings.read_ahead_kb << 10)
                task_status.started()
                log.info("fusefs daemon on %s, API on %s", mountpoint, api_socket)
                await pyfuse3.main()
                lifecycle.move(DaemonState.STOPPING)
                nursery.cancel_scope.cancel()
        finally:
            pyfuse3.close(unmount=True)
            if takeover is not None:  # libfuse did not mount this session, so it does not unmount it
                unmount(mountpoint, lazy=True)
    finally:
        if lifecycle.state is not DaemonState.STOPPING:
            lifecycle.move(DaemonState.STOPPING)
        await images.close_all()
        lifecycle.move(DaemonState.STOPPED)
        log.info("fusefs daemon on %s stopped", mountpoint)
