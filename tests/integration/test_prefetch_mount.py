"""`lazyfly mount --prefetch all`: the whole image lands in the cache in the background."""

import os
import time
from pathlib import Path

import pytest
from fixtures.layouts import only_manifest
from fixtures.mounts import Mounts
from fixtures.trees import compare_trees
from integration.cli import lazyfly

pytestmark = pytest.mark.integration


def _tree(root: Path) -> Path:
    (root / "weights").mkdir(parents=True)
    for i in range(4):
        (root / "weights" / f"shard-{i}.bin").write_bytes(os.urandom((i + 1) << 20))
    (root / "README").write_text("prefetched model\n")
    return root


def test_prefetch_all_fills_the_cache_without_any_read(tmp_path: Path, mounts: Mounts):
    src = _tree(tmp_path / "src")
    layout = tmp_path / "layout"
    lazyfly("build", src, "-o", layout, "--chunk-size", "64KiB", "--compressor", "none")
    mnt = mounts.mount(layout, "--prefetch", "all")
    cache = mounts.tmp_path / "cache"
    blob = only_manifest(layout)["layers"][0]
    want = int(blob["annotations"]["io.lazyfly.blob.uncompressed-size"])
    deadline = time.monotonic() + 120
    cached = 0
    while time.monotonic() < deadline:
        cached = sum(p.stat().st_blocks * 512 for p in (cache / "blobs").glob("*.data"))
        if cached >= want:
            break
        time.sleep(0.2)
    assert cached >= want
    lazyfly("umount", mnt)
    # with the data blob gone, only the prefetched cache can serve the files
    (layout / "blobs" / "sha256" / blob["digest"].removeprefix("sha256:")).unlink()
    mnt = mounts.mount(layout, "--prefetch", "none")
    assert compare_trees(src, mnt) == []
