"""Where the snapshotter finds lazy layers: CRI's labels, and blobs fetched through a peer's proxy.

One snapshotter per module, started with `--peer-proxy` pointing at a real forwarding proxy (what a
Dragonfly peer's proxy looks like from outside). Calls are made over gRPC as containerd's CRI
plugin makes them, and the container's mounts are performed for real.
"""

import hashlib

import grpc
import httpx
import pytest
from fixtures.forward_proxy import ForwardProxy
from fixtures.snapshotter import (
    SnapshotsClient,
    push_small_image,
    start_snapshotter,
    stop_snapshotter,
    teardown_fusefs,
)
from suites.snapshotter_suite import code_of, mounted

from lazyfly.local_registry import local_registry
from lazyfly.snapshotter.labels import (
    CRI_IMAGE_LAYERS,
    CRI_IMAGE_REF,
    CRI_LAYER_DIGEST,
    CRI_MANIFEST_DIGEST,
    LAZYFLY_IMAGE,
    SNAPSHOT_REF,
)

pytestmark = pytest.mark.integration
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("sources")
    with local_registry(base / "registry") as registry, ForwardProxy() as proxy:
        running = start_snapshotter(base, "--plain-http", registry.host, "--peer-proxy", proxy.url)
        client = SnapshotsClient(running.address, "lazyfly")
        try:
            yield registry, proxy, running, client
        finally:
            client.close()
            stop_snapshotter(running)
            teardown_fusefs(running)


def chain_ids(diff_ids: list[str]) -> list[str]:
    chain = [diff_ids[0]]
    for diff_id in diff_ids[1:]:
        chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


def test_cri_labels_commit_every_layer_lazily_and_the_container_reads_through_the_peer_proxy(node, tmp_path):
    registry, proxy, _, client = node
    ref = f"{registry.host}/cri/app:v1"
    push_small_image(tmp_path, {"etc/motd": "through the peer\n"}, ref)
    response = httpx.get(f"{registry.url}/v2/cri/app/manifests/v1", headers={"Accept": MANIFEST}, timeout=30)
    manifest, manifest_digest = response.json(), response.headers["Docker-Content-Digest"]
    config = httpx.get(f"{registry.url}/v2/cri/app/blobs/{manifest['config']['digest']}", timeout=30).json()
    layers = [layer["digest"] for layer in manifest["layers"]]
    chains = chain_ids(config["rootfs"]["diff_ids"])

    parent = ""
    for layer, chain in zip(layers, chains, strict=True):
        labels = {
            SNAPSHOT_REF: chain,
            CRI_IMAGE_REF: ref,
            CRI_LAYER_DIGEST: layer,
            CRI_MANIFEST_DIGEST: manifest_digest,
            CRI_IMAGE_LAYERS: ",".join(layers),
        }
        key = f"extract-{chain}"
        code = code_of(lambda key=key, labels=labels, parent=parent: client.prepare(key, parent, labels))
        assert code == grpc.StatusCode.ALREADY_EXISTS
        info = client.stat(chain)
        assert (info.kind, info.parent) == (3, parent)
        parent = chain
    assert client.stat(chains[-1]).labels[LAZYFLY_IMAGE] == layers[-1].partition(":")[2]

    with mounted(client.prepare("container", chains[-1]), tmp_path / "rootfs") as root:
        assert (root / "etc" / "motd").read_text() == "through the peer\n"
    blob_urls = [seen.url for seen in proxy.seen if "/blobs/" in seen.url]
    assert any(layers[0] in url for url in blob_urls), blob_urls
    assert all(seen.headers.get("X-Dragonfly-Registry") for seen in proxy.seen if "/blobs/" in seen.url)
    client.remove("container")


def test_labels_naming_a_missing_image_leave_the_layer_to_containerd(node, tmp_path):
    registry, _, _, client = node
    labels = {
        SNAPSHOT_REF: "sha256:" + "1" * 64,
        CRI_IMAGE_REF: f"{registry.host}/no/such:image",
        CRI_LAYER_DIGEST: "sha256:" + "2" * 64,
    }
    mounts = client.prepare("extract-missing", "", labels)  # an ordinary active snapshot to unpack into
    assert [mount.type for mount in mounts] == ["bind"]
    client.remove("extract-missing")
