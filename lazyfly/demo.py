"""`make run`: the main job on embedded defaults, end to end on this machine.

Builds a lazyfly image from a generated sample tree (with a busybox to run), pushes it to a
docker-registry started on loopback, inspects and checks it from the registry, mounts it lazily and
reads a file; then starts a lazyfly node (`lazyfly up`) and a private containerd that uses it,
pulls the image with `ctr-remote image rpull` and runs a container from it with `ctr run`, and
prints how long that took and how little had to be fetched. Everything lives in a temporary
directory that is removed at the end; every daemon is stopped and every mount undone, even on
failure.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lazyfly.local_containerd import LocalContainerd, detach_mounts_under, local_containerd
from lazyfly.local_registry import LocalRegistry, free_port, local_registry

LAZYFLY = str(Path(sys.executable).with_name("lazyfly"))
BUSYBOX = "/bin/busybox"  # Debian's busybox-static: runs in an image without a libc
NODE_START_TIMEOUT = 60.0
PREFETCH_GRACE = 2.0  # seconds for the peer's background download of the blobs before it is counted


def make_sample_tree(root: Path, seed: int = 1) -> None:
    """A small tree like a model directory next to an app: text, weights, links, a sparse file."""
    rng = random.Random(seed)
    (root / "app" / "conf").mkdir(parents=True)
    (root / "models" / "tiny").mkdir(parents=True)
    words = [rng.randbytes(rng.randint(3, 9)).hex() for _ in range(500)]
    for i in range(200):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(50, 2000)))
        (root / "app" / f"module_{i:03d}.py").write_text(f"# module {i}\n{text}\n")
    (root / "app" / "conf" / "settings.yaml").write_text("workers: 4\nlisten: 127.0.0.1:8080\n")
    shard = rng.randbytes(24 << 20)
    for i in range(2):  # two identical shards: the second is deduplicated chunk by chunk
        (root / "models" / "tiny" / f"weights-{i}.bin").write_bytes(shard)
    with open(root / "models" / "tiny" / "sparse.idx", "wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"index island")
    os.symlink("tiny/weights-0.bin", root / "models" / "current")
    os.link(root / "app" / "conf" / "settings.yaml", root / "app" / "settings.yaml")
    (root / "bin").mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in ("sh", "cat", "ls", "wc"):
        os.symlink("busybox", root / "bin" / applet)


def _run(*args: str) -> str:
    print(f"$ lazyfly {' '.join(args)}", flush=True)
    proc = subprocess.run([LAZYFLY, *args], text=True, capture_output=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(proc.returncode)
    print(proc.stdout, end="", flush=True)
    return proc.stdout


def _mount_and_read(ref: str, work: Path) -> None:
    """Mount the image from the registry, read one file, and show how little was fetched."""
    mnt, cache = work / "mnt", work / "cache"
    _run("mount", ref, str(mnt), "--plain-http", "--cache-dir", str(cache), "--prefetch", "none")
    try:
        started = time.monotonic()
        data = (mnt / "app" / "conf" / "settings.yaml").read_text()
        took = time.monotonic() - started
        print(f"read /app/conf/settings.yaml from the lazy mount in {took * 1000:.1f} ms:")
        print("    " + data.strip().replace("\n", "\n    "))
        fetched = sum(p.stat().st_blocks * 512 for p in (cache / "blobs").glob("*.data"))
        image = sum(p.stat().st_size for p in (work / "image" / "blobs" / "sha256").iterdir())
        print(f"bytes fetched so far: {fetched} of an image of {image} bytes ({100 * fetched / image:.2f} %)")
    finally:
        _run("umount", str(mnt))


def _run_container(ref: str, registry: LocalRegistry, work: Path) -> None:
    """Start a node and a containerd that uses it, pull the image lazily and run a container."""
    node_log = work / "node.log"
    config = work / "node.yaml"
    ports = {"scheduler": f"127.0.0.1:{free_port()}", "peer_ports": [free_port() for _ in range(4)],
             "seed_ports": [free_port() for _ in range(4)]}  # fmt: skip
    config.write_text(yaml.safe_dump(ports))
    argv = [
        LAZYFLY,
        "up",
        "--config",
        str(config),
        "--state-dir",
        str(work / "node"),
        "--run-dir",
        str(work / "run"),
    ]
    print(f"$ lazyfly up --config {config} --state-dir {work / 'node'} --run-dir {work / 'run'} "
          f"--plain-http {registry.host}    # scheduler, seed peer, peer, snapshotter, fusefs")  # fmt: skip
    with open(node_log, "wb") as log:
        node = subprocess.Popen([*argv, "--plain-http", registry.host], stdout=log, stderr=subprocess.STDOUT)
    socket = work / "run" / "snapshotter.sock"
    try:
        _wait_for(socket, node, node_log)
        with local_containerd(work / "containerd", proxy_snapshotters={"lazyfly": socket}) as containerd:
            print(f"containerd on {containerd.address} with the proxy snapshotter lazyfly")
            _pull_and_run(containerd, ref, work, ports["peer_ports"][2], ports["seed_ports"][2])
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(30)
        detach_mounts_under(work / "node")  # the fusefs daemon exits once its mount is gone


def _wait_for(socket: Path, node: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + NODE_START_TIMEOUT
    while not socket.is_socket():
        if node.poll() is not None or time.monotonic() > deadline:
            sys.stderr.write(log.read_text(errors="replace"))
            raise SystemExit("lazyfly up did not start")
        time.sleep(0.1)


def _pull_and_run(containerd: LocalContainerd, ref: str, work: Path, *metrics_ports: int) -> None:
    started = time.monotonic()
    print(f"$ ctr-remote image rpull --plain-http --snapshotter lazyfly {ref}")
    containerd.ctr_remote("image", "rpull", "--plain-http", "--snapshotter", "lazyfly", ref)
    pulled = time.monotonic()
    script = "cat /app/conf/settings.yaml; ls -l /models/tiny"
    print(f"$ ctr run --rm --snapshotter lazyfly {ref} demo /bin/sh -c '{script}'")
    out = containerd.ctr(
        "run", "--rm", "--snapshotter", "lazyfly", ref, "demo", "/bin/sh", "-c", script
    ).stdout
    ran = time.monotonic()
    print("    " + out.strip().replace("\n", "\n    "))
    fetched = _bytes_fetched(work / "node" / "snapshotter" / "fusefs.sock")
    image = sum(p.stat().st_size for p in (work / "image" / "blobs" / "sha256").iterdir())
    print(
        f"container started from the lazy image: pull {pulled - started:.2f} s, run {ran - pulled:.2f} s; "
        f"fetched {fetched} of {image} image bytes ({100 * fetched / image:.2f} %)"
    )
    time.sleep(PREFETCH_GRACE)
    from_registry = sum(_registry_bytes(port) for port in metrics_ports)
    print(
        f"the node's peers fetched {from_registry} bytes from the registry: the ranges read, then the rest "
        "of each blob in the background (X-Dragonfly-Prefetch), for the next container and other nodes"
    )


def _registry_bytes(metrics_port: int) -> int:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    wanted = 'lazyfly_peer_piece_bytes_total{traffic_type="back_to_source"} '
    return sum(int(float(line.split()[-1])) for line in text.splitlines() if line.startswith(wanted))


def _bytes_fetched(api_socket: Path) -> int:
    import httpx

    transport = httpx.HTTPTransport(uds=str(api_socket))
    with httpx.Client(transport=transport, base_url="http://fusefs", timeout=30) as client:
        images = client.get("/api/v1/daemon").json()["images"]
    return sum(image["cache"]["bytes_fetched"] for image in images)


def main() -> None:
    """Run the demo."""
    with tempfile.TemporaryDirectory(prefix="lazyfly-demo-") as tmp:
        work = Path(tmp)
        make_sample_tree(work / "sample")
        with local_registry(work / "registry") as registry:
            print(f"docker-registry on {registry.url}")
            ref = f"{registry.host}/demo/sample:v1"
            started = time.monotonic()
            _run("build", str(work / "sample"), "-o", str(work / "image"), "--tag", "v1")
            _run("push", str(work / "image"), ref, "--plain-http")
            _run("inspect", "--plain-http", "--no-tree", ref)
            _run("check", "--plain-http", ref, "--source", str(work / "sample"))
            _mount_and_read(ref, work)
            _run_container(ref, registry, work)
            print(f"done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
