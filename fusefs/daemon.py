"""The FUSE daemon's lifecycle: mount, serve until unmounted or signalled, then clean up.

One root nursery per daemon (STYLE 6): the FUSE loop and the signal watcher live in it; SIGTERM
or SIGINT ends the FUSE loop with pyfuse3.terminate(), and the mount is always released and every
image closed on the way out, whatever ended the loop.
"""

import logging
import signal
from pathlib import Path

import pyfuse3
import trio

from lazyfly.fusefs.config import DaemonSettings, ImageSettings
from lazyfly.fusefs.image_loader import load_image
from lazyfly.fusefs.mountpoint import recover
from lazyfly.fusefs.namespace import Namespace
from lazyfly.fusefs.operations import LazyOperations
from lazyfly.oci.locate import ImageLocation

log = logging.getLogger(__name__)


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
                task_status.started()
                log.info("serving %s on %s", location, mountpoint)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            pyfuse3.close(unmount=True)
    finally:
        await mounted.aclose()


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return
