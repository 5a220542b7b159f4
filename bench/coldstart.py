"""Container cold start: containerd's overlayfs (full pull) against lazyfly's snapshotter (lazy pull).

Usage: .venv/bin/python bench/coldstart.py [--rates 1gbit,200mbit] [--rounds 1]

The registry runs in its own network namespace behind a veth whose registry side is shaped with
`tc tbf`. The image is the Debian bookworm rootfs with python3, numpy, scipy and gcc (bench/
_rootfs_image.py, about 1.05 GB, two gzip layers), pushed as it is and converted with
`lazyfly convert`. For each rate, from a clean containerd each time (new root, state and
snapshotter state, page cache dropped):
- overlayfs: `ctr image pull` (download and unpack), then `ctr run --rm IMAGE python3 -c "import
  numpy, scipy.linalg"`;
- lazyfly: `lazyfly snapshotter` (with its fusefs daemon, default settings), `ctr-remote image
  rpull --snapshotter lazyfly`, then the same `ctr run` on the lazy image;
- lazyfly + prefetch list: the same on an image converted with `--prefetch-list`, what the
  workload read in a recording run (`lazyfly accessed`: the files, and for those read in parts the
  ranges of the chunks read), as Nydus users build theirs (eStargz users: `ctr-remote image
  optimize`); the build stores those chunks together in the image's prefetch blob, and the fusefs
  daemon fetches it in the background while the container starts.
Printed: pull, run, total seconds and the bytes the registry sent, side by side, the ratio of the
totals (goal ≤ 0.10 at 1 Gbit, ≤ 0.08 at 200 Mbit) and the lazy registry bytes as a share of the
image (goal ≤ 7 %).
"""

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _harness import CACHE, LAZYFLY, drop_caches, mb, print_table
from _netns import ShapedNamespace, shaped_namespace
from _rootfs_image import TAG, rootfs_image

from lazyfly.local_containerd import (
    LocalContainerd,
    detach_mounts_under,
    local_containerd,
    processes_with_argument,
)
from lazyfly.local_registry import local_registry

WORKLOAD = ["python3", "-c", "import numpy, scipy.linalg"]
GOALS = {"1gbit": 0.10, "200mbit": 0.08}
BYTES_GOAL = 0.07
REGISTRY_PORT = 5000
SNAPSHOTTER_START_TIMEOUT = 60.0

Row = tuple[str, str, str]


@dataclass
class Run:
    """One cold start: seconds to pull and to run, and bytes the registry sent meanwhile."""

    pull: float
    run: float
    registry_bytes: int

    @property
    def total(self) -> float:
        return self.pull + self.run


def _timed_ctr(containerd: LocalContainerd, *args: str, tool: str = "ctr") -> float:
    start = time.perf_counter()
    containerd.ctr(*args, tool=tool)
    return time.perf_counter() - start


def overlayfs_run(base: Path, net: ShapedNamespace, ref: str) -> Run:
    with local_containerd(base / "containerd") as containerd:
        drop_caches()
        sent = net.sent_bytes()
        pull = _timed_ctr(containerd, "image", "pull", "--plain-http", ref)
        run = _timed_ctr(containerd, "run", "--rm", ref, "bench", *WORKLOAD)
        return Run(pull, run, net.sent_bytes() - sent)


def lazyfly_run(
    base: Path, net: ShapedNamespace, ref: str, registry_host: str, record: Path | None = None
) -> Run:
    """One lazy cold start; with `record`, the files the workload read are written there."""
    socket, root = base / "snapshotter.sock", base / "snapshotter"
    argv = [str(LAZYFLY), "snapshotter", "--address", str(socket), "--root", str(root)]
    argv += ["--plain-http", registry_host]
    with open(base / "snapshotter.log", "wb") as log:
        snapshotter = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SNAPSHOTTER_START_TIMEOUT
        while not socket.is_socket():
            if snapshotter.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"snapshotter did not start: {(base / 'snapshotter.log').read_text()}")
            time.sleep(0.1)
        with local_containerd(base / "containerd", proxy_snapshotters={"lazyfly": socket}) as containerd:
            drop_caches()
            sent = net.sent_bytes()
            pull = _timed_ctr(
                containerd,
                "image",
                "rpull",
                "--plain-http",
                "--snapshotter",
                "lazyfly",
                ref,
                tool="ctr-remote",
            )
            run = _timed_ctr(containerd, "run", "--rm", "--snapshotter", "lazyfly", ref, "bench", *WORKLOAD)
            result = Run(pull, run, net.sent_bytes() - sent)
            if record is not None:
                _record_accessed(root / "fusefs.sock", record)
            return result
    except Exception:
        for log_path in (base / "snapshotter.log", root / "fusefs.log"):
            if log_path.exists():
                print(
                    f"--- {log_path} (end)\n{log_path.read_text(errors='replace')[-4000:]}", file=sys.stderr
                )
        raise
    finally:
        snapshotter.terminate()
        snapshotter.wait(30)
        for pid in processes_with_argument(str(root / "fusefs.sock")):
            subprocess.run(["kill", "-9", str(pid)])
        detach_mounts_under(base)


def _record_accessed(api_socket: Path, record: Path) -> None:
    transport = httpx.HTTPTransport(uds=str(api_socket))
    with httpx.Client(transport=transport, base_url="http://fusefs", timeout=30) as client:
        (image,) = client.get("/api/v1/daemon").json()["images"]
    subprocess.run(
        [str(LAZYFLY), "accessed", "--api-socket", str(api_socket), image["id"], "-o", str(record)],
        check=True,
    )


def _image_bytes(layout: Path) -> int:
    index = json.loads((layout / "index.json").read_text())
    (manifest,) = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == TAG
    ]
    body = json.loads((layout / "blobs" / manifest["digest"].replace(":", "/")).read_text())
    return sum(layer["size"] for layer in body["layers"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rates", default="1gbit,200mbit", help="comma-separated tc rates of the registry link"
    )
    parser.add_argument(
        "--only", choices=["overlayfs", "lazyfly"], help="measure one side only (for debugging)"
    )
    args = parser.parse_args()
    _, layout = rootfs_image()
    image_bytes = _image_bytes(layout)
    rows: list[Row] = [
        ("image (gzip layers)", mb(image_bytes), "debootstrap bookworm + python3/numpy/scipy/gcc")
    ]
    with (
        tempfile.TemporaryDirectory(dir=CACHE, prefix="coldstart-") as tmp,
        shaped_namespace("lzfbench") as net,
    ):
        work = Path(tmp)
        registry_host = f"{net.inner_ip}:{REGISTRY_PORT}"
        with local_registry(work / "registry", host=net.inner_ip, port=REGISTRY_PORT, wrapper=net.wrapper):
            plain, lazy = f"{registry_host}/rootfs:{TAG}", f"{registry_host}/rootfs:{TAG}-lazyfly"
            print(f"pushing {layout} to {plain} and converting it to {lazy} ...", flush=True)
            subprocess.run(
                ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:{TAG}", f"docker://{plain}"],
                check=True, capture_output=True,
            )  # fmt: skip
            net.shape("1gbit")
            subprocess.run(
                [str(LAZYFLY), "convert", "--plain-http", plain, lazy], check=True, capture_output=True
            )
            listed = f"{lazy}-prefetch"
            if args.only != "overlayfs":
                print("recording the files the workload reads ...", flush=True)
                record = work / "prefetch.list"
                lazyfly_run(_fresh(work, "record"), net, lazy, registry_host, record=record)
                subprocess.run(
                    [str(LAZYFLY), "convert", "--plain-http", "--prefetch-list", str(record), plain, listed],
                    check=True, capture_output=True,
                )  # fmt: skip
                rows.append(("prefetch list", f"{len(record.read_text().splitlines())} files", "recorded"))
            for rate in args.rates.split(","):
                net.shape(rate)
                full = lazy_run = listed_run = None
                if args.only != "lazyfly":
                    print(f"{rate}: overlayfs pull + run ...", flush=True)
                    full = overlayfs_run(_fresh(work, f"overlay-{rate}"), net, plain)
                if args.only != "overlayfs":
                    print(f"{rate}: lazyfly rpull + run ...", flush=True)
                    lazy_run = lazyfly_run(_fresh(work, f"lazyfly-{rate}"), net, lazy, registry_host)
                    print(f"{rate}: lazyfly rpull + run, image with the prefetch list ...", flush=True)
                    listed_run = lazyfly_run(_fresh(work, f"listed-{rate}"), net, listed, registry_host)
                rows += _rows(rate, "lazyfly", full, lazy_run, image_bytes)
                if listed_run is not None:
                    listed_rows = _rows(rate, "lazyfly+list", full, listed_run, image_bytes)
                    rows += listed_rows[1:] if full is not None else listed_rows
    print_table(rows)


def _fresh(work: Path, name: str) -> Path:
    path = work / name
    path.mkdir()
    return path


def _rows(rate: str, name: str, full: Run | None, lazy: Run | None, image_bytes: int) -> list[Row]:
    if full is None or lazy is None:
        run, side = (full, "overlayfs") if lazy is None else (lazy, name)
        assert run is not None
        return [(f"{rate} {side} pull / run / total", f"{run.pull:.1f} / {run.run:.1f} / {run.total:.1f} s",
                 f"registry sent {mb(run.registry_bytes)}")]  # fmt: skip
    ratio = lazy.total / full.total
    share = lazy.registry_bytes / image_bytes
    goal = GOALS.get(rate)
    verdict = "" if goal is None else f"goal <= {goal:.2f} ({'ok' if ratio <= goal else 'MISSED'})"
    return [
        (f"{rate} overlayfs pull / run / total", f"{full.pull:.1f} / {full.run:.1f} / {full.total:.1f} s",
         f"registry sent {mb(full.registry_bytes)}"),
        (f"{rate} {name} rpull / run / total", f"{lazy.pull:.1f} / {lazy.run:.1f} / {lazy.total:.1f} s",
         f"registry sent {mb(lazy.registry_bytes)}"),
        (f"{rate} total {name} / overlayfs", f"{ratio:.3f}", verdict),
        (f"{rate} {name} registry bytes / image", f"{100 * share:.1f} %",
         f"goal <= {100 * BYTES_GOAL:.0f} % ({'ok' if share <= BYTES_GOAL else 'MISSED'})"),
    ]  # fmt: skip


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
