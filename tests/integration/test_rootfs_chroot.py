"""A Debian rootfs image pushed to a loopback registry, mounted lazily from it, and run with chroot.

The rootfs (debootstrap minbase, cached per machine) is built with `lazyfly build`, pushed with
`lazyfly push`, and mounted from the registry with `lazyfly mount --plain-http --prefetch none`, so
that every byte in the daemon's cache was fetched for a read. Programs run from the mount with
`chroot` must print what they print on Debian, and the cache must end up holding a small part of
the image: the blocks allocated under CACHE/blobs (uncompressed chunks, sparse files) are compared
with the compressed sizes of the image's data blobs, a bound that only favours the image.
"""

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from fixtures.mounts import Mounts
from fixtures.registry import RunningRegistry
from integration.cli import lazyfly

pytestmark = pytest.mark.integration

BLOB_MEDIA_TYPE = "application/vnd.oci.image.layer.lazyfly.blob.v1"
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"
MAX_FETCHED_FRACTION = 0.10  # of the compressed data blobs; these few programs read ~4 %


@pytest.fixture(scope="module")
def rootfs_layout(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rootfs-image") / "layout"
    lazyfly("build", debian_rootfs, "-o", out)
    return out


def _chroot(root: Path, script: str) -> str:
    proc = subprocess.run(
        ["chroot", root, "/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
    )
    assert proc.returncode == 0, f"chroot {root} sh -c {script!r} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def _allocated_bytes(directory: Path) -> int:
    """Bytes of disk blocks held by the files under `directory` (what `du -s` counts; holes are free)."""
    return sum(path.stat().st_blocks * 512 for path in directory.rglob("*") if path.is_file())


def _data_blob_bytes(registry: RunningRegistry, repo: str, tag: str) -> int:
    request = urllib.request.Request(
        f"{registry.url}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        manifest = json.load(response)
    sizes = [layer["size"] for layer in manifest["layers"] if layer["mediaType"] == BLOB_MEDIA_TYPE]
    assert sizes, f"no {BLOB_MEDIA_TYPE} layer in {manifest}"
    return sum(sizes)


def test_programs_run_from_the_lazily_mounted_rootfs(
    debian_rootfs: Path, rootfs_layout: Path, registry: RunningRegistry, mounts: Mounts
):
    ref = f"{registry.host}/debian:bookworm"
    lazyfly("push", rootfs_layout, ref, "--plain-http")
    mountpoint = mounts.mount(ref, "--plain-http", "--prefetch", "none")
    cache = mounts.tmp_path / "cache"

    version = (debian_rootfs / "etc" / "debian_version").read_text().strip()
    assert re.fullmatch(r"12\.\d+", version), version
    out = _chroot(mountpoint, "echo hello from $(cat /etc/debian_version)")
    assert out == f"hello from {version}\n"

    out = _chroot(mountpoint, "/usr/bin/dpkg --version")
    assert re.match(r"Debian 'dpkg' package management program version 1\.21\.\S+ \(amd64\)", out), out

    out = _chroot(mountpoint, "ls -l /usr/bin | head -n 5")
    lines = out.splitlines()
    assert lines[0].startswith("total ") and len(lines) == 5, out
    assert all(re.match(r"[-lrwxsStT]{10} +\d+ root +root ", line) for line in lines[1:]), out

    source = (debian_rootfs / "etc" / "os-release").resolve()
    assert _chroot(mountpoint, "cat /etc/os-release").encode() == source.read_bytes()
    sh = os.stat(mountpoint / "bin" / "sh", follow_symlinks=False)
    assert sh.st_mode == os.lstat(debian_rootfs / "bin" / "sh").st_mode

    fetched = _allocated_bytes(cache / "blobs")
    image = _data_blob_bytes(registry, "debian", "bookworm")
    assert 0 < fetched < MAX_FETCHED_FRACTION * image, f"cache holds {fetched} bytes of a {image}-byte image"
