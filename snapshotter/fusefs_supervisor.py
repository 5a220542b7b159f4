"""Keep a fusefs daemon serving the snapshotter's images: start or adopt it, restart it, re-add images.

The snapshotter reads lazyfly images through one fusefs daemon (one FUSE mount, one subdirectory per
image). Managed (no `--fusefs-socket`), the supervisor runs `lazyfly fusefs` itself; otherwise it
only watches a daemon someone else runs.

Rules:
- Rule 1 (adopt first): a daemon that already answers on the API socket is adopted, never replaced,
  so a restarted snapshotter leaves running containers' mounts alone. A managed daemon runs in its
  own session and outlives the snapshotter (systemd: KillMode=process).
- Rule 2 (restart): a managed daemon that exits, or any daemon that stops answering for
  DOWN_PROBES probes in a row, is brought up again (the new daemon detaches the dead mount) and
  every image in the store is added again before the supervisor reports it up.
- Rule 3 (takeover): after bringing a daemon up the supervisor holds a duplicate of its FUSE session
  descriptor. A managed daemon that dies while its mount is still there is replaced by one that
  takes that live session over (`--takeover-fd`), with every stored image restored in its slot, so
  the kernel only queues the containers' reads meanwhile and they go on: overlays built on the
  mount never see it die. Without a held session (an adopted daemon died before handing it over,
  or the mount is gone) the new daemon mounts afresh.
- Rule 4 (add once): `ensure` adds an image at most once at a time (one lock per image id), and an
  AlreadyExists answer counts as served.
- Rule 5 (timeouts at the call site, STYLE 7): each API call runs under its DEFAULT_* bound.
"""

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from lazyfly.api.fusefs import AddImageRequest, session_socket_path
from lazyfly.errors import AlreadyExists, LazyflyError, NotFound, Unavailable
from lazyfly.mountinfo import mount_entry
from lazyfly.snapshotter import metastore as ms
from lazyfly.snapshotter.fusefs_client import FusefsClient
from lazyfly.snapshotter.metrics import SnapshotterMetrics

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 30.0
DEFAULT_CALL_TIMEOUT = 10.0
DEFAULT_ADD_TIMEOUT = 120.0
PROBE_INTERVAL = 1.0
DOWN_PROBES = 3
RETRY_FIRST = 1.0
RETRY_MAX = 30.0


@dataclass
class FusefsDaemonSpec:
    """Where the daemon mounts and listens, and whether the supervisor runs it."""

    mountpoint: Path
    api_socket: Path
    cache_dir: Path
    log_path: Path
    managed: bool = True


class FusefsSupervisor:
    """The fusefs daemon as the snapshotter sees it: up, serving the images in the store."""

    def __init__(
        self,
        spec: FusefsDaemonSpec,
        store: ms.MetaStore,
        metrics: SnapshotterMetrics,
        command: Sequence[str] | None = None,
    ) -> None:
        self.metrics = metrics
        self.spec = spec
        self.store = store
        self.command = list(command or [sys.executable, "-m", "lazyfly"])
        self.client = FusefsClient(spec.api_socket)
        self.restarts = 0
        self._process: anyio.abc.Process | None = None
        self._session_fd: int | None = None
        self._served: dict[str, int] = {}  # image id -> slot
        self._locks: dict[str, anyio.Lock] = {}
        self._up = anyio.Event()

    def image_dir(self, image_id: str) -> Path:
        """Where image `image_id` appears in the fusefs mount."""
        return self.spec.mountpoint / image_id

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bring the daemon up, report ready, and keep it up until cancelled."""
        try:
            await self._bring_up()
            task_status.started()
            while True:
                await self._wait_until_down()
                self._up = anyio.Event()
                self._served.clear()
                self.restarts += 1
                takeover = self._session_fd is not None and _is_fuse_mount(self.spec.mountpoint)
                log.warning(
                    "fusefs daemon on %s is down: %s",
                    self.spec.mountpoint,
                    "taking its session over" if takeover else "starting a new one",
                )
                if not takeover:
                    self._drop_session_fd()
                self.metrics.fusefs_restarts.labels("takeover" if takeover else "fresh").inc()
                await self._bring_up_again(takeover)
        finally:
            self._drop_session_fd()
            with anyio.CancelScope(shield=True):
                await self.client.aclose()

    async def ensure(self, request: AddImageRequest) -> AddImageRequest:
        """Serve `request.id`, adding it if the daemon does not have it yet (Rule 4); return the
        request with the slot the image has."""
        with anyio.move_on_after(DEFAULT_START_TIMEOUT) as waiting:
            await self._up.wait()
        if waiting.cancelled_caught:
            raise Unavailable(
                f"the fusefs daemon on {self.spec.mountpoint} is not up: cannot serve image {request.id}"
            )
        lock = self._locks.setdefault(request.id, anyio.Lock())
        async with lock:
            if request.id not in self._served:
                try:
                    with anyio.fail_after(DEFAULT_ADD_TIMEOUT):
                        slot = (await self.client.add_image(request)).slot
                except AlreadyExists:  # added meanwhile by a restore: ask where it went
                    slot = await self._slot_of(request.id)
                except TimeoutError:
                    raise Unavailable(
                        f"fusefs daemon did not add image {request.id} within {DEFAULT_ADD_TIMEOUT:.0f} s"
                    ) from None
                self._served[request.id] = slot
                log.info("fusefs serves image %s (%s)", request.id, request.reference)
        return dataclasses.replace(request, slot=self._served[request.id])

    async def forget(self, image_id: str) -> None:
        """Stop serving `image_id` (a no-op if the daemon lacks it)."""
        with anyio.fail_after(DEFAULT_CALL_TIMEOUT):
            try:
                await self.client.remove_image(image_id)
            except NotFound:
                pass
        self._served.pop(image_id, None)

    async def collect_cache(self) -> None:
        """Have the daemon delete the cache of blobs no image it serves reads."""
        with anyio.fail_after(DEFAULT_CALL_TIMEOUT):
            result = await self.client.collect_cache()
        summary = result.summary()
        if summary is not None:
            log.info("collected the cache: %s", summary)

    async def _bring_up_again(self, takeover: bool) -> None:
        """Bring the daemon up, retrying with backoff: the snapshotter outlives a failing daemon."""
        delay = RETRY_FIRST
        while True:
            try:
                await self._bring_up(takeover)
                return
            except LazyflyError as exc:
                log.error("fusefs daemon on %s: %s; retrying in %.0f s", self.spec.mountpoint, exc, delay)
            await anyio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    async def _bring_up(self, takeover: bool = False) -> None:
        served = await self._probe()
        if served is None:
            if not self.spec.managed:
                raise Unavailable(f"no fusefs daemon answers on {self.spec.api_socket}")
            served = await self._start(takeover)
        else:
            log.info("adopted the fusefs daemon on %s", self.spec.api_socket)
        self._served = served
        for request in self._remembered():
            if request.id not in served:
                try:
                    await self._add_again(request)
                except LazyflyError as exc:
                    log.error("cannot serve image %s again: %s", request.id, exc)
        if self._session_fd is None:
            self._session_fd = await self._fetch_session_fd()
        self._up.set()

    def _remembered(self) -> list[AddImageRequest]:
        with self.store.transaction(False) as tx:
            stored = ms.images(tx)
        return [
            AddImageRequest.from_json(request, f"stored image {image_id}")
            for image_id, request in stored.items()
        ]

    async def _add_again(self, request: AddImageRequest) -> None:
        with anyio.fail_after(DEFAULT_ADD_TIMEOUT):
            try:
                await self.client.add_image(request)
            except AlreadyExists:
                pass
        self._served[request.id] = request.slot
        log.info("fusefs serves image %s again", request.id)

    async def _slot_of(self, image_id: str) -> int:
        with anyio.fail_after(DEFAULT_CALL_TIMEOUT):
            info = await self.client.daemon_info()
        return next((image.slot for image in info.images if image.id == image_id), 0)

    async def _probe(self) -> dict[str, int] | None:
        """The images the daemon serves (id -> slot), or None if no daemon answers."""
        try:
            with anyio.fail_after(DEFAULT_CALL_TIMEOUT):
                info = await self.client.daemon_info()
        except (Unavailable, TimeoutError):
            return None
        return {image.id: image.slot for image in info.images} if info.state == "RUNNING" else None

    async def _fetch_session_fd(self) -> int | None:
        """A duplicate of the daemon's FUSE session descriptor, or None if it hands none out."""
        path = session_socket_path(self.spec.api_socket)
        try:
            with anyio.fail_after(DEFAULT_CALL_TIMEOUT):
                return await anyio.to_thread.run_sync(_receive_fd, path)
        except (OSError, TimeoutError) as exc:
            log.warning(
                "no FUSE session descriptor from %s (%s): a dead daemon's mount will not survive", path, exc
            )
            return None

    def _drop_session_fd(self) -> None:
        if self._session_fd is not None:
            os.close(self._session_fd)
            self._session_fd = None

    async def _start(self, takeover: bool) -> dict[str, int]:
        spec = self.spec
        takeover_args: list[str] = []
        pass_fds: tuple[int, ...] = ()
        if takeover and self._session_fd is not None:
            restore = spec.log_path.with_name("fusefs-restore.json")
            restore.write_text(json.dumps([request.to_json() for request in self._remembered()]))
            takeover_args = ["--takeover-fd", str(self._session_fd), "--restore", str(restore)]
            pass_fds = (self._session_fd,)
        argv = [
            *self.command,
            "fusefs",
            "--mountpoint",
            str(spec.mountpoint),
            "--api-socket",
            str(spec.api_socket),
            "--cache-dir",
            str(spec.cache_dir),
            *takeover_args,
        ]
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        finally:
            os.close(log_fd)
        log.info("started the fusefs daemon (pid %d) on %s", self._process.pid, spec.mountpoint)
        with anyio.move_on_after(DEFAULT_START_TIMEOUT):
            while self._process.returncode is None:
                served = await self._probe()
                if served is not None:
                    return served
                await anyio.sleep(0.1)
        raise Unavailable(
            f"the fusefs daemon for {spec.mountpoint} did not come up "
            f"(exit code {self._process.returncode}); see {spec.log_path}"
        )

    async def _wait_until_down(self) -> None:
        misses = 0
        while misses < DOWN_PROBES:
            process = self._process
            if process is not None:
                with anyio.move_on_after(PROBE_INTERVAL):
                    await process.wait()
                    log.warning("fusefs daemon (pid %d) exited with %s", process.pid, process.returncode)
                    self._process = None
                    return
            else:
                await anyio.sleep(PROBE_INTERVAL)
            misses = 0 if await self._probe() is not None else misses + 1


def _receive_fd(path: Path) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(DEFAULT_CALL_TIMEOUT)
        client.connect(str(path))
        _, fds, _, _ = socket.recv_fds(client, 1, 1)
    if len(fds) != 1:
        raise OSError(f"{path} sent {len(fds)} descriptors, not one")
    return fds[0]


def _is_fuse_mount(path: Path) -> bool:
    entry = mount_entry(path)
    return entry is not None and entry[0].startswith("fuse")
