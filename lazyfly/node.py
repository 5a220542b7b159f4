"""`lazyfly up`: the all-in-one node, its daemons run and supervised as processes.

Today the node is the snapshotter, which runs and supervises the fusefs daemon itself; the peer,
seed peer and scheduler join this table when they exist. Every path derives from two directories
(state and run), so one flag moves a whole node.

Rules:
- Rule 1: each daemon is a child process (`python -m lazyfly ...`) owned by one task of the root task
  group; a child that exits is started again after a backoff that grows while it keeps failing.
- Rule 2: SIGTERM or SIGINT stops the children (SIGTERM, then SIGKILL after a grace period) and
  returns. The fusefs daemon runs in its own session and stays (the snapshotter's Rule 1):
  containers keep their mounts while the node restarts.
- Rule 3: the node never imports a role; it speaks to them through their command lines.
"""

import logging
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/lazyfly")
DEFAULT_RUN_DIR = Path("/run/lazyfly")
STOP_GRACE = 10.0
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long starts its next failure at the first backoff


@dataclass
class NodeSettings:
    """What `lazyfly up` runs, and where (YAML file or flags)."""

    state_dir: Path = DEFAULT_STATE_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    plain_http: list[str] = field(default_factory=list)
    peer_proxy: str | None = None
    prefetch: str = "table"

    @property
    def snapshotter_socket(self) -> Path:
        """The socket containerd's proxy plugin talks to."""
        return self.run_dir / "snapshotter.sock"

    @property
    def snapshotter_root(self) -> Path:
        """The snapshotter's state (and its fusefs daemon's mount, socket and cache)."""
        return self.state_dir / "snapshotter"


@dataclass
class ChildSpec:
    """One supervised daemon: its name and `lazyfly` arguments."""

    name: str
    args: list[str]


def node_children(settings: NodeSettings) -> list[ChildSpec]:
    """The daemons of a node, in start order."""
    snapshotter = [
        "snapshotter",
        "--address",
        str(settings.snapshotter_socket),
        "--root",
        str(settings.snapshotter_root),
        "--prefetch",
        settings.prefetch,
        *(arg for host in settings.plain_http for arg in ("--plain-http", host)),
    ]
    if settings.peer_proxy:
        snapshotter += ["--peer-proxy", settings.peer_proxy]
    return [ChildSpec("snapshotter", snapshotter)]


def containerd_snippet(settings: NodeSettings) -> str:
    """The lines of containerd's config.toml that make it use this node."""
    return "\n".join(
        [
            "[proxy_plugins.lazyfly]",
            '  type = "snapshot"',
            f'  address = "{settings.snapshotter_socket}"',
            "",
            "# for Kubernetes (the CRI plugin):",
            '[plugins."io.containerd.grpc.v1.cri".containerd]',
            '  snapshotter = "lazyfly"',
            "  disable_snapshot_annotations = false",
        ]
    )


async def run_node(
    settings: NodeSettings, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run the node's daemons until SIGTERM or SIGINT."""
    for directory in (settings.state_dir, settings.run_dir, settings.state_dir / "logs"):
        directory.mkdir(parents=True, exist_ok=True)
    async with anyio.create_task_group() as tg:
        for child in node_children(settings):
            tg.start_soon(_supervise, child, settings.state_dir / "logs" / f"{child.name}.log")
        task_status.started()
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("signal %s: stopping the node", signal.Signals(signum).name)
                break
        tg.cancel_scope.cancel()


async def _supervise(child: ChildSpec, log_path: Path) -> None:
    delay = BACKOFF_FIRST
    while True:
        started = anyio.current_time()
        with open(log_path, "ab") as log_file:  # noqa: ASYNC230 (opening a log file is instant)
            process = await anyio.open_process(
                [sys.executable, "-m", "lazyfly", *child.args],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        log.info("started %s (pid %d), log %s", child.name, process.pid, log_path)
        try:
            code = await process.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(process)
        if anyio.current_time() - started > HEALTHY_AFTER:
            delay = BACKOFF_FIRST
        log.warning("%s exited with %s; starting it again in %.0f s", child.name, code, delay)
        await anyio.sleep(delay)
        delay = min(BACKOFF_MAX, delay * 2)


async def _stop(process: anyio.abc.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    with anyio.move_on_after(STOP_GRACE):
        await process.wait()
        return
    process.kill()
    await process.wait()
