"""Containers started by a real containerd from lazily loaded images, through `lazyfly snapshotter`.

One node per module: a docker-registry on loopback, the snapshotter (running its own fusefs
daemon) and a private containerd that knows it as the proxy snapshotter `lazyfly`. Images are
built from Debian's rootfs and from the three-layer umoci image, converted with `lazyfly convert`,
pulled with `ctr-remote image rpull` and run with `ctr run`. A busybox binary is bind-mounted into
containers whose image has no shell.
"""

import hashlib
import os
import re
import signal
import subprocess
import time
import uuid

import httpx
import pytest
from fixtures.snapshotter import fusefs_daemon_pid, push_small_image, snapshotter_node
from fixtures.umoci_image import make_rootfs_image, make_three_layer_image, push_layout
from integration.cli import lazyfly
from prometheus_client.parser import text_string_to_metric_families

from lazyfly.local_registry import free_port, local_registry

pytestmark = pytest.mark.integration

SNAPSHOTTER = "lazyfly"
BUSYBOX = "type=bind,src=/bin/busybox,dst=/.bb/busybox,options=rbind:ro"
BB = "/.bb/busybox"
RECONNECT_TIMEOUT = 60.0  # grpc-go backs off up to 2 minutes; it retries within seconds here
MAX_FETCHED_FRACTION = 0.10  # of the compressed data blobs; a shell and dpkg read ~4 %


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("node")
    metrics = f"127.0.0.1:{free_port()}"
    with local_registry(base / "registry") as registry:
        with snapshotter_node(base, "--plain-http", registry.host, "--metrics-address", metrics) as (
            snapshotter,
            containerd,
        ):
            yield registry, snapshotter, containerd


@pytest.fixture(scope="module")
def debian_images(node, debian_rootfs, tmp_path_factory):
    """(plain OCI reference, lazyfly reference) of the Debian rootfs."""
    registry, _, _ = node
    layout = tmp_path_factory.mktemp("debian") / "layout"
    make_rootfs_image(debian_rootfs, layout, "bookworm")
    plain = push_layout(layout, "bookworm", registry.host, repo="debian")
    lazy = f"{registry.host}/debian:bookworm-lazyfly"
    lazyfly("convert", plain, lazy, "--plain-http")
    return plain, lazy


def rpull(containerd, ref):
    return containerd.ctr_remote("image", "rpull", "--plain-http", "--snapshotter", SNAPSHOTTER, ref)


def run(containerd, ref, *argv, mounts=()):
    flags = [arg for mount in mounts for arg in ("--mount", mount)]
    name = f"t-{uuid.uuid4().hex[:8]}"
    return containerd.ctr("run", "--rm", "--snapshotter", SNAPSHOTTER, *flags, ref, name, *argv).stdout


def fusefs_images(snapshotter) -> dict[str, dict]:
    transport = httpx.HTTPTransport(uds=str(snapshotter.root / "fusefs.sock"))
    with httpx.Client(transport=transport, base_url="http://fusefs", timeout=30) as client:
        info = client.get("/api/v1/daemon").json()
    return {image["id"]: image for image in info["images"]}


def data_blobs(registry, ref) -> dict[str, int]:
    repo, _, tag = ref.partition("/")[2].rpartition(":")
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    manifest = httpx.get(f"{registry.url}/v2/{repo}/manifests/{tag}", headers=accept, timeout=30).json()
    return {
        layer["digest"]: layer["size"]
        for layer in manifest["layers"]
        if layer.get("annotations", {}).get("io.lazyfly.blob") == "true"
    }


def test_a_debian_image_runs_from_the_lazy_snapshotter_without_its_layers_downloaded(
    node, debian_images, debian_rootfs
):
    registry, snapshotter, containerd = node
    _, lazy = debian_images
    rpull(containerd, lazy)
    version = (debian_rootfs / "etc" / "debian_version").read_text().strip()
    out = run(containerd, lazy, "/bin/sh", "-c", "echo hello from $(cat /etc/debian_version); dpkg --version")
    assert out.startswith(f"hello from {version}\n")
    assert re.search(r"Debian 'dpkg' package management program version 1\.21\.\S+ \(amd64\)", out), out

    blobs = data_blobs(registry, lazy)
    content = containerd.ctr("content", "ls", "-q").stdout.split()
    assert not set(blobs) & set(content), "containerd downloaded a data blob"
    fetched = sum(image["cache"]["bytes_fetched"] for image in fusefs_images(snapshotter).values())
    assert 0 < fetched < MAX_FETCHED_FRACTION * sum(blobs.values())


def test_whiteouts_of_a_three_layer_image_are_seen_inside_the_container(node, tmp_path):
    registry, _, containerd = node
    image = make_three_layer_image(tmp_path / "layout")
    plain = push_layout(image.layout_dir, image.tag, registry.host, repo="three-layer")
    lazy = f"{registry.host}/three-layer:lazyfly"
    lazyfly("convert", plain, lazy, "--plain-http")
    rpull(containerd, lazy)
    script = "; ".join(
        [
            *(f"{BB} test -e /{path} && echo present /{path}" for path in image.deleted),
            f"{BB} cat /etc/config.txt /data/new.txt /opq/new.txt",
            f"{BB} ls /opq",
        ]
    )
    out = run(containerd, lazy, BB, "sh", "-c", script + "; true", mounts=[BUSYBOX])
    expected = image.expected
    assert "present" not in out, out
    assert out.splitlines() == [
        *(
            expected[path].content.decode().strip()
            for path in ["etc/config.txt", "data/new.txt", "opq/new.txt"]
        ),
        "new.txt",
    ]


def test_a_plain_oci_image_is_downloaded_and_unpacked_through_the_same_snapshotter(node, debian_images):
    _, snapshotter, containerd = node
    plain, _ = debian_images
    before = fusefs_images(snapshotter)
    containerd.ctr("image", "pull", "--plain-http", "--snapshotter", SNAPSHOTTER, plain)
    rpull(containerd, plain)  # labels name a layer that is not lazyfly's: the download path too
    assert run(containerd, plain, "/bin/cat", "/etc/debian_version").strip()
    assert fusefs_images(snapshotter).keys() == before.keys()


def test_concurrent_pulls_of_one_image_serve_it_once(node, tmp_path):
    registry, snapshotter, containerd = node
    refs = [f"{registry.host}/once:v{i}" for i in range(3)]
    push_small_image(tmp_path, {"etc/hello": "once\n"}, *refs)
    before = set(fusefs_images(snapshotter))
    pulls = [
        subprocess.Popen(
            [
                "ctr-remote",
                "--address",
                str(containerd.address),
                "image",
                "rpull",
                "--plain-http",
                "--snapshotter",
                SNAPSHOTTER,
                ref,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for ref in refs
    ]
    for pull in pulls:
        out, _ = pull.communicate(timeout=120)
        assert pull.returncode == 0, out
    assert len(set(fusefs_images(snapshotter)) - before) == 1
    out = run(containerd, refs[0], BB, "cat", "/etc/hello", mounts=[BUSYBOX])
    assert out == "once\n"


def test_a_registry_the_snapshotter_cannot_reach_fails_the_pull_and_leaves_no_snapshot(node, tmp_path):
    _, _, containerd = node

    def snapshots():
        return containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls").stdout.splitlines()

    with local_registry(tmp_path / "other") as other:  # not among the snapshotter's --plain-http
        ref = f"{other.host}/unreachable:v1"
        push_small_image(tmp_path, {"file": "x"}, ref)
        before = snapshots()
        proc = containerd.ctr_remote(
            "image", "rpull", "--plain-http", "--snapshotter", SNAPSHOTTER, ref, check=False
        )
    assert proc.returncode != 0
    assert other.host in proc.stderr, proc.stderr
    assert snapshots() == before


@pytest.fixture
def running_container(node, debian_images):
    """A Debian container from the lazy image, sleeping; killed and deleted at the end."""
    _, _, containerd = node
    _, lazy = debian_images
    rpull(containerd, lazy)
    name = f"sleeper-{uuid.uuid4().hex[:8]}"
    containerd.ctr("run", "-d", "--snapshotter", SNAPSHOTTER, lazy, name, "sleep", "600")
    try:
        yield name
    finally:
        containerd.ctr("task", "kill", "-s", "KILL", name, check=False)
        containerd.ctr("task", "delete", "-f", name, check=False)
        containerd.ctr("container", "delete", name, check=False)


def snapshots_once_reconnected(containerd) -> str:
    """`ctr snapshots ls`, retried while containerd's channel to the restarted snapshotter backs off."""
    deadline = time.monotonic() + RECONNECT_TIMEOUT
    while True:
        proc = containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls", check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            assert proc.returncode == 0, proc.stderr
            return proc.stdout
        time.sleep(0.5)


def exec_in(containerd, container, *argv):
    return containerd.ctr("task", "exec", "--exec-id", uuid.uuid4().hex[:8], container, *argv).stdout


def test_a_killed_snapshotter_comes_back_with_every_snapshot_and_running_containers_keep_their_mounts(
    node, debian_images, running_container
):
    _, snapshotter, containerd = node
    _, lazy = debian_images
    listed = containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls").stdout
    fusefs_pid = fusefs_daemon_pid(snapshotter)
    snapshotter.restart()
    assert fusefs_daemon_pid(snapshotter) == fusefs_pid  # adopted, not replaced
    assert snapshots_once_reconnected(containerd) == listed
    assert exec_in(containerd, running_container, "/bin/cat", "/etc/debian_version").strip()
    assert run(containerd, lazy, "/bin/ls", "/usr/bin/dpkg").strip() == "/usr/bin/dpkg"


def test_a_killed_fusefs_daemon_is_replaced_and_the_containers_next_reads_recover(
    node, debian_rootfs, running_container
):
    _, snapshotter, containerd = node
    old = fusefs_daemon_pid(snapshotter)
    os.kill(old, signal.SIGKILL)
    # runc starts /bin/sh from the lazy image: the reads wait in the kernel until the new daemon
    # has taken the FUSE session over, then go on.
    script = "md5sum /usr/bin/dpkg-query | cut -c1-32; cat /etc/debian_version"
    out = exec_in(containerd, running_container, "/bin/sh", "-c", script)
    digest = hashlib.md5((debian_rootfs / "usr/bin/dpkg-query").read_bytes()).hexdigest()
    assert out.split() == [digest, (debian_rootfs / "etc/debian_version").read_text().strip()]
    assert fusefs_daemon_pid(snapshotter) != old


def test_an_image_removed_from_containerd_stops_being_served_and_its_cache_is_collected(node, tmp_path):
    registry, snapshotter, containerd = node
    ref = f"{registry.host}/collected:v1"
    push_small_image(tmp_path, {"etc/hello": "collect me\n"}, ref)
    before = set(fusefs_images(snapshotter))
    bootstraps = snapshotter.root / "cache" / "bootstraps"
    bootstraps_before = set(bootstraps.glob("*"))
    rpull(containerd, ref)
    assert run(containerd, ref, BB, "cat", "/etc/hello", mounts=[BUSYBOX]) == "collect me\n"
    (image_id,) = set(fusefs_images(snapshotter)) - before
    blobs = list(data_blobs(registry, ref))
    cache = snapshotter.root / "cache" / "blobs"
    assert all((cache / f"{digest.replace(':', '-')}.data").exists() for digest in blobs)
    added_bootstraps = set(bootstraps.glob("*")) - bootstraps_before
    assert added_bootstraps

    containerd.ctr("image", "rm", "--sync", ref)  # containerd collects the snapshots, then Cleanup
    deadline = time.monotonic() + RECONNECT_TIMEOUT
    while image_id in fusefs_images(snapshotter) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert image_id not in fusefs_images(snapshotter)
    assert not any((cache / f"{digest.replace(':', '-')}.data").exists() for digest in blobs)
    assert not any(path.exists() for path in added_bootstraps)


def test_the_snapshotter_counts_calls_and_lazy_layers_and_shows_its_state_in_prometheus_metrics(
    node, debian_images
):
    _, snapshotter, containerd = node
    _, lazy = debian_images
    rpull(containerd, lazy)
    address = snapshotter.args[snapshotter.args.index("--metrics-address") + 1]
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(httpx.get(f"http://{address}/metrics", timeout=30).text)
        for sample in family.samples
    }
    assert samples[("lazyfly_snapshotter_lazy_layers_total", (("kind", "bootstrap"),))] >= 1
    assert (
        samples[("lazyfly_snapshotter_calls_total", (("code", "ALREADY_EXISTS"), ("method", "Prepare")))] >= 1
    )
    assert samples[("lazyfly_snapshotter_snapshots", (("kind", "committed"),))] >= 2
    assert samples[("lazyfly_snapshotter_images", ())] >= 1
