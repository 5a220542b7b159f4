"""Network namespaces on one Linux bridge, each joined by a veth pair; processes started inside them.

Topology: the bridge `PREFIX-br` on the host holds SUBNET.1/24, so the host reaches every namespace
(and scrapes metrics) through it. `add(name)` creates the namespace `PREFIX-NAME` with a veth pair:
the host end (`PREFIX-vN`) is enslaved to the bridge, the inner end is `eth0` holding SUBNET.(N+1)
and lo is up; `host_counter` reads the host end's counters (its rx is what the namespace sent).
Each namespace is a bench/_netns.py `ShapedNamespace`, so `shape(rate)` puts
`tc tbf` on its eth0 (what leaves the namespace) and `sent_bytes()` reads eth0's tx counter.

Rules kept:
- Rule 1: everything created is named under PREFIX. At the start, whatever a killed run left under
  that prefix is removed: processes still inside those namespaces are killed by pid (`ip netns
  pids`), then the namespaces, the host-side veths and the bridge are deleted.
- Rule 2: at the end, even on error or Ctrl-C, every process started with `start()` gets SIGTERM,
  then SIGKILL after STOP_TIMEOUT; what still runs in the namespaces is killed by pid; then the
  namespaces (which take their veth pairs with them) and the bridge are deleted.
- Rule 3: interface names stay within the kernel's 15 characters (IFNAMSIZ - 1).
"""

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _netns import ShapedNamespace, run_checked

from lazyfly.processes import stop_processes

STOP_TIMEOUT = 15.0


def _quiet(*argv: str) -> None:
    subprocess.run(argv, capture_output=True)


@dataclass
class BridgeNetwork:
    """The bridge, the namespaces added to it and the processes started in them."""

    prefix: str
    subnet: str
    namespaces: dict[str, ShapedNamespace] = field(default_factory=dict)
    host_devs: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    @property
    def host_ip(self) -> str:
        return f"{self.subnet}.1"

    def add(self, name: str) -> ShapedNamespace:
        """Create the namespace `PREFIX-NAME` on the bridge, with the next free address."""
        index = len(self.namespaces) + 1
        netns, host_dev, ip = f"{self.prefix}-{name}", f"{self.prefix}-v{index}", f"{self.subnet}.{index + 1}"
        assert len(host_dev) <= 15, f"interface name {host_dev} is too long"
        run_checked("ip", "netns", "add", netns)
        namespace = ShapedNamespace(netns, self.host_ip, ip, "eth0")
        self.namespaces[name], self.host_devs[name] = namespace, host_dev
        run_checked("ip", "link", "add", host_dev, "type", "veth", "peer", "name", "eth0", "netns", netns)
        run_checked("ip", "link", "set", host_dev, "master", self.bridge)
        run_checked("ip", "link", "set", host_dev, "up")
        run_checked(*namespace.wrapper, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        run_checked(*namespace.wrapper, "ip", "link", "set", "eth0", "up")
        run_checked(*namespace.wrapper, "ip", "link", "set", "lo", "up")
        return namespace

    def host_counter(self, name: str, counter: str) -> int:
        """A statistics counter (rx_bytes: what namespace `name` sent) of its veth's host end.

        Read from the host's sysfs, so it is cheap enough to sample while a run goes on.
        """
        return int(Path(f"/sys/class/net/{self.host_devs[name]}/statistics/{counter}").read_text())

    def start(self, namespace: ShapedNamespace, argv: list[str], log: Path) -> subprocess.Popen:
        """Start `argv` inside `namespace`, output appended to `log`; it is stopped at the end."""
        with log.open("ab") as sink:
            process = subprocess.Popen(
                [*namespace.wrapper, *argv], stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """SIGTERM every started process, SIGKILL what has not exited after STOP_TIMEOUT (Rule 2)."""
        stop_processes(self.processes, STOP_TIMEOUT)
        self.processes.clear()


def _remove(prefix: str) -> None:
    """Delete every namespace, veth and bridge named under `prefix`, killing what runs inside."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.startswith(f"{prefix}-")]
    for name in names:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
        for pid in pids.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    for name in names:
        _quiet("ip", "netns", "delete", name)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        device = line.split(":")[1].strip().split("@")[0]
        if device.startswith(f"{prefix}-v"):
            _quiet("ip", "link", "delete", device)
    _quiet("ip", "link", "delete", f"{prefix}-br")


@contextlib.contextmanager
def bridge_network(prefix: str = "lzfp", subnet: str = "10.210.0") -> Iterator[BridgeNetwork]:
    """Create the bridge (after removing a killed run's leftovers); remove everything at the end."""
    _remove(prefix)
    network = BridgeNetwork(prefix, subnet)
    try:
        run_checked("ip", "link", "add", network.bridge, "type", "bridge")
        run_checked("ip", "addr", "add", f"{network.host_ip}/24", "dev", network.bridge)
        run_checked("ip", "link", "set", network.bridge, "up")
        yield network
    finally:
        network.stop()
        _remove(prefix)
