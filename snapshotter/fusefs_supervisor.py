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
- Rule 3 (add once): `ensure` adds an image at most once at a time (one lock per image id), and an
  AlreadyExists answer counts as served.
- Rule 4 (timeouts at the call site, STYLE 7): each API call runs under its DEFAULT_* bound.
"""

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from lazyfly.api.fusefs import AddImageRequest
from lazyfly.errors import AlreadyExists, LazyflyError, NotFound, Unavailable
from lazyfly.snapshotter import metastore as ms
from lazyfly.snapshotter.fusefs_client import FusefsClient

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 30.0
DEFAULT_CALL_TIMEOUT = 10.0
DEFAULT_ADD_TIMEOUT = 120.0
PROBE_INTERVAL = 1.0
DOWN_PROBES = 3


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
        self, spec: FusefsDaemonSpec, store: ms.MetaStore, command: Sequence[str] | None = None
    ) -> None:
        self.spec = spec
        self.store = store
        self.command = list(command or [sys.executable, "-m", "lazyfly"])
        self.client = FusefsClient(spec.api_socket)
        self.restarts = 0
        self._process: anyio.abc.Process | None = None
        self._served: set[str] = set()
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
                log.warning("fusefs daemon on %s is down: restarting it", self.spec.mountpoint)
                await self._bring_up()
        finally:
            with anyio.CancelScope(shield=True):
                await self.client.aclose()

    async def ensure(self, request: AddImageRequest) -> None:
        """Serve `request.id`, adding it if the daemon does not have it yet (Rule 3)."""
        await self._up.wait()
        if request.id in self._served:
            return
        lock = self._locks.setdefault(request.id, anyio.Lock())
        async with lock:
            if request.id in self._served:
                return
            try:
                with anyio.fail_after(DEFAULT_ADD_TIMEOUT):
                    await self.client.add_image(request)
            except AlreadyExists:
                pass
            except TimeoutError:
                raise Unavailable(
                    f"fusefs daemon did not add image {request.id} within {DEFAULT_ADD_TIMEOUT:.0f} s"
                ) from None
            self._served.add(request.id)
            log.info("fusefs serves image %s (%s)", request.id, request.reference)

    async def forget(self, image_id: str) -> None:
        """Stop serving `image_id` (a no-op if the daemon lacks it)."""
        with anyio.fail_after(DEFAULT_CALL_TIMEOUT):
            try:
                await self.client.remove_image(image_id)
            except NotFound:
                pass
        self._served.discard(image_id)

    async def _bring_up(self) -> None:
        served = await self._probe()
        if served is None:
            if not self.spec.managed:
                raise Unavailable(f"no fusefs daemon answers on {self.spec.api_socket}")
            served = await self._start()
        else:
            log.info("adopted the fusefs daemon on %s", self.spec.api_socket)
        self._served = served
        with self.store.transaction(False) as tx:
            remembered = ms.images(tx)
        for image_id, request in remembered.items():
            if image_id not in served:
                try:
                    await self._add_again(AddImageRequest.from_json(request, f"stored image {image_id}"))
                except LazyflyError as exc:
                    log.error("cannot serve image %s again: %s", image_id, exc)
        self._up.set()

    async def _add_again(self, request: AddImageRequest) -> None:
        with anyio.fail_after(DEFAULT_ADD_TIMEOUT):
            try:
                await self.client.add_image(request)
            except AlreadyExists:
                pass
        self._served.add(request.id)
        log.info("fusefs serves image %s again", request.id)

    async def _probe(self) -> set[str] | None:
        """The ids the daemon serves, or None if no daemon answers."""
        try:
            with anyio.fail_after(DEFAULT_CALL_TIMEOUT):
                info = await self.client.daemon_info()
        except (Unavailable, TimeoutError):
            return None
        return {image.id for image in info.images} if info.state == "RUNNING" else None

    async def _start(self) -> set[str]:
        spec = self.spec
        argv = [
            *self.command,
            "fusefs",
            "--mountpoint",
            str(spec.mountpoint),
            "--api-socket",
            str(spec.api_socket),
            "--cache-dir",
            str(spec.cache_dir),
        ]
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._process = await anyio.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, start_new_session=True
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
