"""A network namespace joined to the host by a veth pair whose far end is shaped with `tc tbf`.

The far end's egress is what leaves the namespace, so a server inside it sends at most `rate`.
Everything is removed when the context ends, even on error.
"""

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


def run_checked(*argv: str) -> str:
    """Run `argv` and return its stdout; RuntimeError with its stderr when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass
class ShapedNamespace:
    """`name` holds `inner_ip` on `inner_dev`; the host reaches it from `host_ip`."""

    name: str
    host_ip: str
    inner_ip: str
    inner_dev: str

    @property
    def wrapper(self) -> list[str]:
        """The argv prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def shape(self, rate: str) -> None:
        """Limit what leaves the namespace to `rate` (e.g. 1gbit, 200mbit)."""
        burst = "2mb" if rate.endswith("gbit") else "512kb"
        run_checked(*self.wrapper, "tc", "qdisc", "replace", "dev", self.inner_dev, "root", "tbf",
            "rate", rate, "burst", burst, "latency", "50ms")  # fmt: skip

    def sent_bytes(self) -> int:
        """Bytes sent out of the namespace so far (the inner device's tx counter)."""
        return int(run_checked(*self.wrapper, "cat", f"/sys/class/net/{self.inner_dev}/statistics/tx_bytes"))


@contextlib.contextmanager
def shaped_namespace(name: str, subnet: str = "10.201.0") -> Iterator[ShapedNamespace]:
    """Create the namespace and its veth pair; delete both at the end."""
    host_dev, inner_dev = f"{name}-h", f"{name}-n"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)  # a leftover of a killed run
    subprocess.run(["ip", "link", "delete", host_dev], capture_output=True)
    run_checked("ip", "netns", "add", name)
    try:
        run_checked("ip", "link", "add", host_dev, "type", "veth", "peer", "name", inner_dev)
        run_checked("ip", "link", "set", inner_dev, "netns", name)
        run_checked("ip", "addr", "add", f"{subnet}.1/24", "dev", host_dev)
        run_checked("ip", "link", "set", host_dev, "up")
        wrapper = ["ip", "netns", "exec", name]
        run_checked(*wrapper, "ip", "addr", "add", f"{subnet}.2/24", "dev", inner_dev)
        run_checked(*wrapper, "ip", "link", "set", inner_dev, "up")
        run_checked(*wrapper, "ip", "link", "set", "lo", "up")
        yield ShapedNamespace(name, f"{subnet}.1", f"{subnet}.2", inner_dev)
    finally:
        subprocess.run(["ip", "link", "delete", host_dev], capture_output=True)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
