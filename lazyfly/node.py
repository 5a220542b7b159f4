"""`lazyfly up`: the all-in-one node, its daemons run and supervised as processes.

The node is the scheduler, a seed peer, a peer and the snapshotter (which runs and supervises the
fusefs daemon itself, fetching blobs through the peer's proxy). Every path derives from two
directories (state and run), so one flag moves a whole node; `p2p: false` leaves the P2P daemons
out and the snapshotter reads registries directly. On one machine the two peers listen on
loopback; a cluster sets `ip` and points `scheduler` at a shared scheduler.

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
import socket
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
    peer_proxy: str | None = None  # default: this node's peer, when p2p is on
    prefetch: str = "table"
    p2p: bool = True
    ip: str = "127.0.0.1"
    hostname: str = field(default_factory=socket.gethostname)
    scheduler: str = "127.0.0.1:8002"
    run_scheduler: bool = True  # false: `scheduler` is someone else's
    peer_ports: list[int] = field(
        default_factory=lambda: [4000, 4001, 4002, 4005]
    )  # upload proxy metrics vortex
    seed_ports: list[int] = field(default_factory=lambda: [4010, 4011, 4012, 4015])

    @property
    def proxy_url(self) -> str | None:
        """The proxy the fusefs daemon fetches blobs through."""
        if self.peer_proxy or not self.p2p:
            return self.peer_proxy
        return f"http://127.0.0.1:{self.peer_ports[1]}"

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


def _peer(settings: NodeSettings, name: str, ports: list[int], seed: bool) -> ChildSpec:
    upload, proxy, metrics, vortex = ports
    args = [
        "peer",
        "--data-dir", str(settings.state_dir / name),
        "--download-socket", str(settings.run_dir / f"{name}.sock"),
        "--ip", settings.ip,
        "--hostname", f"{settings.hostname}-seed" if seed else settings.hostname,
        "--scheduler", settings.scheduler,
        "--upload-port", str(upload), "--proxy-port", str(proxy),
        "--metrics-port", str(metrics), "--vortex-port", str(vortex),
    ]  # fmt: skip
    return ChildSpec(name, [*args, "--seed"] if seed else args)


def node_children(settings: NodeSettings) -> list[ChildSpec]:
    """The daemons of a node, in start order."""
    children = []
    if settings.p2p:
        if settings.run_scheduler:
            children.append(ChildSpec("scheduler", ["scheduler", "--listen", settings.scheduler]))
        children.append(_peer(settings, "seed-peer", settings.seed_ports, seed=True))
        children.append(_peer(settings, "peer", settings.peer_ports, seed=False))
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
    if settings.proxy_url:
        snapshotter += ["--peer-proxy", settings.proxy_url]
    children.append(ChildSpec("snapshotter", snapshotter))
    return children


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
