"""The benchmarks' big real image: a Debian bookworm rootfs with python3, numpy, scipy and gcc.

Made once with debootstrap (bench/.cache/rootfs, several minutes, needs a Debian mirror) and turned
into a two-layer OCI image with umoci (bench/.cache/rootfs-oci, tag TAG): the base system, then
Python's dist-packages on top, like a real image build. Both are cached by marker files.
"""

import subprocess
import tempfile
from pathlib import Path

from _harness import CACHE, cached

MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-numpy,python3-scipy,gcc"
SPLIT_DIR = "usr/lib/python3/dist-packages"  # becomes the image's second layer
TAG = "v1"


def rootfs_image() -> tuple[Path, Path]:
    """(the rootfs directory, the OCI layout of its image), made if not cached."""
    rootfs = CACHE / "rootfs"
    cached(rootfs, _debootstrap)
    layout = CACHE / "rootfs-oci"
    cached(layout, lambda path: _make_rootfs_image(rootfs, path))
    return rootfs, layout


def _run(argv: list[str | Path]) -> None:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed: {result.stderr.strip()[-2000:]}")


def _debootstrap(target: Path) -> None:
    print(f"running debootstrap into {target} (several minutes, once) ...")
    _run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", target, MIRROR])


def _make_rootfs_image(rootfs: Path, layout: Path) -> None:
    """Two layers, like a real image: the base system, then Python's dist-packages on top.

    Both layers come from unpack/repack: `umoci insert` (0.4.7) wrote a truncated layer tar here.
    """
    print(f"building the OCI image {layout}:{TAG} with umoci ...")
    image = f"{layout}:{TAG}"
    _run(["umoci", "init", "--layout", layout])
    _run(["umoci", "new", "--image", image])
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="umoci-") as work:
        base, top, side = Path(work) / "base", Path(work) / "top", Path(work) / "dist-packages"
        _run(["umoci", "unpack", "--image", image, base])
        _run(["cp", "-a", f"{rootfs}/.", f"{base}/rootfs/"])
        (base / "rootfs" / SPLIT_DIR).rename(side)
        _run(["umoci", "repack", "--image", image, "--history.created_by", "debootstrap base", base])
        _run(["umoci", "unpack", "--image", image, top])
        side.rename(top / "rootfs" / SPLIT_DIR)
        _run(["umoci", "repack", "--image", image, "--history.created_by", "dist-packages", top])
    _run(["umoci", "gc", "--layout", layout])
