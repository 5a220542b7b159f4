"""A private containerd (Debian's `containerd`) for `make run`, tests and benchmarks.

Rules:
- Rule 1: everything lives under one base directory (root, state, socket, config, log); the CRI
  plugin is disabled, and snapshotters given as proxy plugins are registered by name.
- Rule 2: the context manager owns the daemon and what it starts: on the way out, even on error,
  containerd is stopped, the runc shims it started (found by their `-address`) are killed, and
  every mount left under the base directory is detached, deepest first.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lazyfly.errors import FailedPrecondition, Unavailable
from lazyfly.mountinfo import mounts_under
from lazyfly.processes import stop_processes

CONTAINERD_BINARY = "containerd"
DEFAULT_START_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_CTR_TIMEOUT = 600.0


@dataclass
class LocalContainerd:
    """A running containerd; `ctr` and `ctr_remote` run those tools against it."""

    base: Path
    address: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    namespace: str = "default"

    def ctr(
        self, *args: str, tool: str = "ctr", check: bool = True, timeout: float = DEFAULT_CTR_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run `ctr ARGS` (or `ctr-remote`) against this containerd; with `check`, raise on failure."""
        argv = [tool, "--address", str(self.address), "--namespace", self.namespace, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise FailedPrecondition(
                f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def ctr_remote(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `ctr-remote ARGS` against this containerd."""
        return self.ctr(*args, tool="ctr-remote", check=check)


# Tests that drive the snapshots API by hand hold no leases: keep the collector away from them.
NO_GARBAGE_COLLECTION = """[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "10000h"
  mutation_threshold = 1000000000
  deletion_threshold = 0
  schedule_delay = "10000h"
"""


def containerd_config(base: Path, proxy_snapshotters: Mapping[str, Path], extra_config: str = "") -> str:
    """containerd's config.toml for a private instance under `base`."""
    lines = [
        "version = 2",
        f'root = "{base / "root"}"',
        f'state = "{base / "state"}"',
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        "[grpc]",
        f'  address = "{base / "containerd.sock"}"',
        "[ttrpc]",
        f'  address = "{base / "containerd.sock.ttrpc"}"',
    ]
    for name, socket in proxy_snapshotters.items():
        lines += [f"[proxy_plugins.{name}]", '  type = "snapshot"', f'  address = "{socket}"']
    return "\n".join(lines) + "\n" + extra_config


@contextlib.contextmanager
def local_containerd(
    base: Path, *, proxy_snapshotters: Mapping[str, Path] = {}, extra_config: str = ""
) -> Iterator[LocalContainerd]:
    """Run containerd under `base` until the context ends (Rule 2)."""
    binary = shutil.which(CONTAINERD_BINARY)
    if binary is None:
        raise FailedPrecondition(f"{CONTAINERD_BINARY} is not installed (Debian package containerd)")
    base.mkdir(parents=True, exist_ok=True)
    config = base / "config.toml"
    config.write_text(containerd_config(base, proxy_snapshotters, extra_config))
    address = base / "containerd.sock"
    log_path = base / "containerd.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [binary, "--config", str(config), "--log-level", "info"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = LocalContainerd(base, address, process, log_path)
    try:
        _wait_until_answering(running)
        yield running
    finally:
        _stop(running)


def _wait_until_answering(running: LocalContainerd) -> None:
    deadline = time.monotonic() + DEFAULT_START_TIMEOUT
    while True:
        if running.process.poll() is not None:
            tail = running.log_path.read_text(errors="replace")[-2000:]
            raise Unavailable(f"containerd exited with {running.process.returncode}:\n{tail}")
        if running.address.is_socket() and running.ctr("version", check=False, timeout=5).returncode == 0:
            return
        if time.monotonic() > deadline:
            raise Unavailable(
                f"containerd did not answer on {running.address} within {DEFAULT_START_TIMEOUT} s"
            )
        time.sleep(0.1)


def _stop(running: LocalContainerd) -> None:
    stop_processes([running.process], DEFAULT_STOP_TIMEOUT)
    for pid in processes_with_argument(str(running.address), "containerd-shim-runc-v2"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    detach_mounts_under(running.base)


def processes_with_argument(argument: str, program: str = "") -> list[int]:
    """Pids of processes whose command line holds `argument` exactly (and whose program name ends
    with `program`, when given)."""
    wanted, name = os.fsencode(argument), os.fsencode(program)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(name) and wanted in argv:
            pids.append(int(entry.name))
    return pids


def detach_mounts_under(base: Path) -> list[str]:
    """Lazily unmount every mount point under `base`, deepest first; return them."""
    targets = mounts_under(base)
    for target in sorted(set(targets), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    return targets
