"""A docker-registry (Debian's `docker-registry`) on loopback, for `make run`, tests and benchmarks.

Rule: the registry is a child process owned by a context manager; it listens on 127.0.0.1 (or on
an address inside a network namespace the caller made, run through `wrapper` such as
`ip netns exec NS`), keeps its data under the given directory, and is killed when the context
ends, even on error.
"""

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lazyfly.errors import FailedPrecondition, Unavailable

REGISTRY_BINARY = "docker-registry"
DEFAULT_START_TIMEOUT = 20.0


@dataclass
class LocalRegistry:
    """A running registry: `host` is `127.0.0.1:PORT`, `url` its plain-HTTP base URL."""

    host: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_registry(
    root: Path,
    *,
    extra_config: list[str] = (),
    host: str = "127.0.0.1",
    port: int | None = None,
    wrapper: list[str] = (),
) -> Iterator[LocalRegistry]:
    """Run a registry with its storage under `root` until the context ends."""
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise FailedPrecondition(f"{REGISTRY_BINARY} is not installed (Debian package docker-registry)")
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = root / "config.yml"
    config.write_text(
        "\n".join(
            [
                "version: 0.1",
                "log: {level: error, accesslog: {disabled: true}}",
                f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}",
                f"http: {{addr: '{host}:{port}', relativeurls: true}}",
                *extra_config,
            ]
        )
        + "\n"
    )
    log_path = root / "registry.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*wrapper, binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    running = LocalRegistry(f"{host}:{port}", f"http://{host}:{port}", process, log_path)
    try:
        _wait_until_answering(running, DEFAULT_START_TIMEOUT)
        yield running
    finally:
        process.kill()
        process.wait()


def _wait_until_answering(running: LocalRegistry, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if running.process.poll() is not None:
            raise Unavailable(f"docker-registry exited: {running.log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{running.url}/v2/", timeout=1):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # auth is configured: answering is all we wait for
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise Unavailable(f"docker-registry did not answer on {running.host} within {timeout} s")
        time.sleep(0.05)
