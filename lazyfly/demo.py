"""`make run`: the main job on embedded defaults, end to end on this machine.

Builds a lazyfly image from a generated sample tree, pushes it to a docker-registry started on
loopback, inspects and checks it from the registry, mounts it lazily and reads a file, and prints
what happened and how little had to be fetched. Everything lives in
a temporary directory that is removed at the end; the registry is stopped even on failure.
"""

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lazyfly.local_registry import local_registry

LAZYFLY = str(Path(sys.executable).with_name("lazyfly"))


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
            print(f"done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
