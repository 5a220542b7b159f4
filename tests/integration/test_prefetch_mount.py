"""`lazyfly mount --prefetch all`: the whole image lands in the cache in the background."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from fixtures.trees import compare_trees
from integration.cli import lazyfly

pytestmark = pytest.mark.integration


def _tree(root: Path) -> Path:
    (root / "weights").mkdir(parents=True)
    for i in range(4):
        (root / "weights" / f"shard-{i}.bin").write_bytes(os.urandom((i + 1) << 20))
    (root / "README").write_text("prefetched model\n")
    return root


def test_prefetch_all_fills_the_cache_without_any_read(tmp_path: Path):
    src = _tree(tmp_path / "src")
    layout = tmp_path / "layout"
    lazyfly("build", src, "-o", layout, "--chunk-size", "64KiB", "--compressor", "none")
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    lazyfly("mount", layout, mnt, "--cache-dir", cache, "--prefetch", "all")
    try:
        manifest = _manifest(layout)
        blob = manifest["layers"][0]
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
        lazyfly("mount", layout, mnt, "--cache-dir", cache, "--prefetch", "none")
        assert compare_trees(src, mnt) == []
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def _manifest(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].removeprefix("sha256:")
    return json.loads((layout / "blobs" / "sha256" / digest).read_bytes())
