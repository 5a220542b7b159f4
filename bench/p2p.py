"""P2P distribution: N peers fetching one blob through lazyfly's P2P against each fetching it directly.

Usage: .venv/bin/python bench/p2p.py [--rate 200mbit] [--size-mb 256] [--peers 8] [--peer-rate RATE]
       [--keep-logs DIR]   (as root)

Topology (bench/_bridge.py): a Linux bridge on the host, and one network namespace per party, each
joined to it by a veth pair: the origin, the scheduler, the seed peer and peer1..peerN. What leaves
the origin's namespace is shaped with `tc tbf` to `--rate`; with `--peer-rate` the seed's and every
peer's egress is shaped too. The origin (bench/_origin_server.py) serves a random blob, written
once into the run's temp dir, with Range support and sendfile.

Method, every step measured from the outside with real processes:
- ideal: blob size / origin rate, the time the origin needs to send the blob once;
- direct: `curl -o /dev/null` in all N peer namespaces at once, straight from the origin; the time
  until the last one finishes;
- p2p: `lazyfly scheduler`, a seed peer (`seed: true`) and N peers, all with fresh data dirs, are
  started and reported ready first (their start-up is not timed); then `lazyfly get --require-peer`
  runs in all N peer namespaces at once; the time until the last one exits 0. Afterwards (untimed)
  every copy's sha256 is checked against the blob.
Origin bytes are the origin namespace's eth0 tx_bytes during a run (headers included); for p2p
they are cross-checked against the sum of the peers' and the seed's
`lazyfly_peer_piece_bytes_total{traffic_type="back_to_source"}`.
Reported to tell where p2p time goes, since the 2-core machine runs every daemon and client:
- CPU: the share of all cores' time (/proc/stat) busy, in user, system, softirq (the veths and
  the bridge) and steal (taken by the VM's host); the CPU seconds of the clients, of each daemon
  (/proc/PID/stat) and of none of them, during the run; and how busy the cores were for 2 s
  before the runs (other sessions' load on a shared machine shows there, and skews the timings);
- phases, from the veths' host-end counters sampled every SAMPLE_INTERVAL: until the origin sent
  its first MB (client start-up, scheduling, seed trigger), until it sent the whole blob, until
  every peer's namespace received the whole blob, until every `lazyfly get` exited (the peers
  store their last pieces and copy the task to the output path, the clients exit).

Goals (reported, not asserted; the script exits 0 once it ran): p2p origin bytes ≤ 1.1× the blob,
p2p time ≤ 1.5× the ideal and ≤ 0.3× the direct time.
"""

import argparse
import contextlib
import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from _bridge import BridgeNetwork, bridge_network
from _harness import CACHE, LAZYFLY, REPO, mb, mb_per_s, print_table, process_cpu_seconds

from lazyfly.digest import sha256_file

ORIGIN_BYTES_GOAL, IDEAL_GOAL, DIRECT_GOAL = 1.1, 1.5, 0.3
ORIGIN_PORT, SCHEDULER_PORT, METRICS_PORT = 8080, 8002, 4002
START_TIMEOUT = 60.0
SAMPLE_INTERVAL = 0.05
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
Row = tuple[str, str, str]


@dataclass
class Blob:
    """The blob the origin serves: its URL, size, sha256 (hex) and the origin's process."""

    url: str
    size: int
    digest: str
    server: subprocess.Popen


@dataclass
class Run:
    """One side: seconds until every client exited 0, what the origin sent, and what it cost."""

    seconds: float
    origin_bytes: int
    cpu: dict[str, float]  # share of all cores' time: busy, user, system, softirq
    cpu_seconds: dict[str, float]  # all cores busy ("busy"), the clients, each daemon by name
    marks: dict[str, float]  # seconds from the start at which the link counters crossed a mark
    note: str = ""


def rate_bytes(rate: str) -> float:
    """Bytes per second of a tc rate such as 200mbit."""
    match = _RATE.match(rate)
    if match is None:
        raise SystemExit(f"--rate {rate}: use a tc rate in bit, kbit, mbit or gbit (e.g. 200mbit)")
    return float(match.group(1)) * _UNITS[match.group(2)] / 8


def _cpu_jiffies() -> list[int]:
    """user, nice, system, idle, iowait, irq, softirq, steal of all cores since boot (/proc/stat)."""
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def _cpu_shares(before: list[int]) -> dict[str, float]:
    """Shares of all cores' time busy, in user, system, softirq and steal since `before` was read."""
    d = [after - earlier for after, earlier in zip(_cpu_jiffies(), before, strict=True)]
    total = max(1, sum(d))
    return {"busy": 1 - (d[3] + d[4]) / total, "user": (d[0] + d[1]) / total, "system": d[2] / total,
            "softirq": (d[5] + d[6]) / total, "steal": d[7] / total}  # fmt: skip


def _wait_for_line(log: Path, text: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not (log.exists() and text in log.read_text(errors="replace")):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{log.name}: no {text!r} (exit {process.poll()}):\n{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def run_clients(
    net: BridgeNetwork,
    jobs: list[tuple[str, list[str], Path]],
    size: int,
    daemons: dict[str, subprocess.Popen],
    timeout: float,
) -> Run:
    """Start every (namespace name, argv, log) client at once and measure until the last exits 0.

    Measured too: the CPU time of the clients (reaped children) and of each daemon; and, reading the
    host ends' counters every SAMPLE_INTERVAL, when the origin had sent its first MB (`first`) and
    the whole blob (`origin`), and when every client's namespace had received the blob (`peers`).
    """
    origin, names = net.namespaces["origin"], [name for name, _, _ in jobs]
    sent, cpu, children = origin.sent_bytes(), _cpu_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN)
    origin_rx = net.host_counter("origin", "rx_bytes")
    peers_tx = {name: net.host_counter(name, "tx_bytes") for name in names}
    marks: dict[str, float] = {}
    daemons_before = {name: process_cpu_seconds(process.pid) for name, process in daemons.items()}
    start = time.perf_counter()
    running = [(net.start(net.namespaces[name], argv, log), log) for name, argv, log in jobs]
    while True:
        codes = [process.poll() for process, _ in running]
        elapsed = time.perf_counter() - start
        from_origin = net.host_counter("origin", "rx_bytes") - origin_rx
        received = min(net.host_counter(n, "tx_bytes") - peers_tx[n] for n in names)
        for mark, reached in (("first", from_origin >= 1 << 20), ("origin", from_origin >= size),
                              ("peers", received >= size)):  # fmt: skip
            if reached:
                marks.setdefault(mark, elapsed)
        for code, (_, log) in zip(codes, running, strict=True):
            if code not in (None, 0):
                raise RuntimeError(f"{log.name}: exited {code}:\n{_tail(log)}")
        if None not in codes:
            break
        if elapsed > timeout:
            log = running[codes.index(None)][1]
            raise RuntimeError(f"{log.name}: not finished after {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(SAMPLE_INTERVAL)
    shares = _cpu_shares(cpu)
    seconds = {
        name: process_cpu_seconds(process.pid) - daemons_before[name] for name, process in daemons.items()
    }
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds["clients"] = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    seconds["busy"] = shares["busy"] * elapsed * (os.cpu_count() or 1)
    return Run(elapsed, origin.sent_bytes() - sent, shares, seconds, marks)


def serve_blob(net: BridgeNetwork, work: Path, size_mb: int) -> Blob:
    """Write a random blob of `size_mb` MiB into `work` and serve it from the origin's namespace."""
    path, digest = work / "blob", hashlib.sha256()
    with path.open("wb") as file:
        for _ in range(size_mb):
            block = os.urandom(1 << 20)
            digest.update(block)
            file.write(block)
    origin = net.namespaces["origin"]
    argv = [sys.executable, str(REPO / "bench" / "_origin_server.py"), str(path), origin.inner_ip]
    process = net.start(origin, [*argv, str(ORIGIN_PORT)], work / "origin.log")
    _wait_for_line(work / "origin.log", "origin ready:", process)
    return Blob(f"http://{origin.inner_ip}:{ORIGIN_PORT}/blob", size_mb << 20, digest.hexdigest(), process)


def direct_run(net: BridgeNetwork, peer_names: list[str], blob: Blob, work: Path, timeout: float) -> Run:
    curl = ["curl", "-sSf", "-o", "/dev/null", blob.url]
    jobs = [(n, curl, work / f"direct-{n}.log") for n in peer_names]
    return run_clients(net, jobs, blob.size, {"origin": blob.server}, timeout)


def _start_peer(net: BridgeNetwork, name: str, work: Path, scheduler: str, seed: bool) -> subprocess.Popen:
    namespace = net.namespaces[name]
    data_dir = work / "data" / name
    data_dir.mkdir(parents=True)
    config = {"seed": seed, "scheduler": scheduler, "data_dir": str(data_dir),
              "ip": namespace.inner_ip, "hostname": f"lzfp-{name}", "metrics_port": METRICS_PORT}  # fmt: skip
    (data_dir / "peer.yaml").write_text(yaml.safe_dump(config))
    log = work / f"{name}.log"
    process = net.start(namespace, [str(LAZYFLY), "peer", "--config", str(data_dir / "peer.yaml")], log)
    _wait_for_line(log, "ready:", process)
    return process


def _metric(net: BridgeNetwork, names: list[str], metric: str, traffic: str = "") -> str:
    """`metric` (of that traffic_type) summed over the /metrics of the peers `names`, in MB."""
    label, total = f'traffic_type="{traffic}"' if traffic else "", 0.0
    for name in names:
        url = f"http://{net.namespaces[name].inner_ip}:{METRICS_PORT}/metrics"
        lines = httpx.get(url, timeout=10, trust_env=False).text.splitlines()
        total += sum(float(line.split()[-1]) for line in lines if line.startswith(metric) and label in line)
    return mb(int(total))


def p2p_run(net: BridgeNetwork, peer_names: list[str], blob: Blob, work: Path, timeout: float) -> Run:
    scheduler = f"{net.namespaces['scheduler'].inner_ip}:{SCHEDULER_PORT}"
    log = work / "scheduler.log"
    process = net.start(net.namespaces["scheduler"], [str(LAZYFLY), "scheduler", "--listen", scheduler], log)
    _wait_for_line(log, "scheduler on", process)
    daemons = {"scheduler": process, "origin": blob.server}
    for name in ["seed", *peer_names]:
        daemons[name] = _start_peer(net, name, work, scheduler, name == "seed")
    (work / "out").mkdir()
    jobs = [
        (name, [str(LAZYFLY), "get", blob.url, "-O", str(work / "out" / name), "--peer",
                str(work / "data" / name / "dfdaemon.sock"), "--require-peer"], work / f"get-{name}.log")
        for name in peer_names
    ]  # fmt: skip
    run = run_clients(net, jobs, blob.size, daemons, timeout)
    for name in peer_names:
        if sha256_file(str(work / "out" / name))[0] != f"sha256:{blob.digest}":
            raise RuntimeError(f"{name}: the copy's sha256 differs from the blob's")

    pieces, uploads = "lazyfly_peer_piece_bytes_total", "lazyfly_peer_upload_bytes_total"
    run.note = (
        f"metrics: back_to_source {_metric(net, ['seed', *peer_names], pieces, 'back_to_source')}, "
        f"remote_peer {_metric(net, peer_names, pieces, 'remote_peer')} "
        f"(the seed uploaded {_metric(net, ['seed'], uploads)})"
    )
    return run


def _verdict(value: float, goal: float) -> str:
    return f"goal <= {goal:.2f} ({'ok' if value <= goal else 'MISSED'})"


def _rows(args: argparse.Namespace, ideal: float, idle: float, direct: Run, p2p: Run) -> list[Row]:
    def side(name: str, run: Run) -> list[Row]:
        shares = ", ".join(f"{key} {100 * share:.0f} %" for key, share in run.cpu.items() if key != "busy")
        spent = dict(run.cpu_seconds)
        outside = spent.pop("busy") - sum(spent.values())
        peers = [spent.pop(key) for key in list(spent) if key.startswith("peer")]
        if peers:
            spent["peers (each)"] = sum(peers) / len(peers)
        cpu = ", ".join(f"{key} {value:.1f}" for key, value in spent.items())
        return [
            (f"{name}: all peers done", f"{run.seconds:.1f} s", f"origin sent {mb(run.origin_bytes)}"),
            (f"{name}: CPU of all cores", f"{100 * run.cpu['busy']:.0f} % busy",
             f"{shares}; CPU s: {cpu}, none of these {outside:.1f} (softirq, steal, others)"),
        ]  # fmt: skip

    size = args.size_mb << 20
    marks = [p2p.marks.get(key, p2p.seconds) for key in ("first", "origin", "peers")] + [p2p.seconds]
    phases = [later - earlier for earlier, later in zip([0.0, *marks], marks, strict=False)]
    return [
        (f"{args.peers} peers + seed, {mb(size)} blob, origin {args.rate}", "time", "origin bytes"),
        ("ideal (blob / origin rate)", f"{ideal:.1f} s", f"origin sends {mb(size)}"),
        ("CPU busy before the runs", f"{100 * idle:.0f} %", "other load; much above 0 skews the timings"),
        *side("direct", direct),
        *side("p2p", p2p),
        ("p2p phases", " / ".join(f"{phase:.1f}" for phase in phases) + " s",
         "start-up to the origin's first MB / origin sends the blob / until every peer received it / "
         "until every lazyfly get exited"),
        ("p2p detail", mb_per_s(size * args.peers, p2p.seconds) + " delivered", p2p.note),
        ("p2p time / ideal", f"{p2p.seconds / ideal:.2f}", _verdict(p2p.seconds / ideal, IDEAL_GOAL)),
        ("p2p time / direct", f"{p2p.seconds / direct.seconds:.2f}",
         _verdict(p2p.seconds / direct.seconds, DIRECT_GOAL)),
        ("p2p origin bytes / blob", f"{p2p.origin_bytes / size:.2f}",
         _verdict(p2p.origin_bytes / size, ORIGIN_BYTES_GOAL)),
        ("direct origin bytes / blob", f"{direct.origin_bytes / size:.2f}", ""),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", default="200mbit", help="tc rate of the origin's link")
    parser.add_argument("--size-mb", type=int, default=256, help="blob size in MiB")
    parser.add_argument("--peers", type=int, default=8, help="peers downloading at once")
    parser.add_argument("--peer-rate", help="tc rate of the seed's and every peer's link (default: unshaped)")
    parser.add_argument("--keep-logs", type=Path, help="copy every daemon's and client's log there")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/p2p.py needs root (network namespaces, tc)")
    size, ideal = args.size_mb << 20, (args.size_mb << 20) / rate_bytes(args.rate)
    timeout = 3 * args.peers * ideal + 120
    peer_names = [f"peer{i}" for i in range(1, args.peers + 1)]
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in CACHE.glob("p2p-*"):  # a killed run's data (the network goes in bridge_network)
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="p2p-") as tmp, bridge_network() as net:
        work = Path(tmp)
        try:
            for name in ["origin", "scheduler", "seed", *peer_names]:
                net.add(name)
            net.namespaces["origin"].shape(args.rate)
            for name in ["seed", *peer_names] if args.peer_rate else []:
                net.namespaces[name].shape(args.peer_rate)
            print(f"writing a {mb(size)} random blob ...", flush=True)
            blob = serve_blob(net, work, args.size_mb)
            before = _cpu_jiffies()
            time.sleep(2.0)
            idle = _cpu_shares(before)["busy"]
            print(f"direct: {args.peers} peers curl the blob at once ...", flush=True)
            direct = direct_run(net, peer_names, blob, work, timeout)
            print(f"p2p: scheduler, seed and {args.peers} peers; lazyfly get in every peer ...", flush=True)
            p2p = p2p_run(net, peer_names, blob, work, timeout)
        finally:
            net.stop()
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for log in work.glob("*.log"):
                    shutil.copy(log, args.keep_logs / log.name)
    print_table(_rows(args, ideal, idle, direct, p2p))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill cleans up as Ctrl-C does
    with contextlib.suppress(KeyboardInterrupt):
        main()
