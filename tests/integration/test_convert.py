"""`lazyfly convert` of a three-layer umoci image with whiteouts, through a real registry."""

import dataclasses
import gzip
import json
import subprocess
from pathlib import Path

import pytest
from fixtures.registry import RunningRegistry
from fixtures.umoci_image import ThreeLayerImage, make_three_layer_image, push_layout
from integration.cli import lazyfly

from lazyfly.oci.layout import OciLayout
from lazyfly.oci.manifest import OCI_LAYER_TAR, encode

pytestmark = pytest.mark.integration


@pytest.fixture
def three_layer(tmp_path: Path) -> ThreeLayerImage:
    return make_three_layer_image(tmp_path / "src-layout", "v1")


def test_registry_image_converts_and_matches_its_source(
    three_layer: ThreeLayerImage, registry: RunningRegistry, tmp_path: Path
):
    source = push_layout(three_layer.layout_dir, "v1", registry.host)
    target = f"{registry.host}/three-layer:v1-lazy"
    lazyfly("convert", "--plain-http", source, target)

    assert "check: OK" in lazyfly("check", "--plain-http", target, "--source", source).stdout
    info = json.loads(lazyfly("inspect", "--plain-http", "--json", target).stdout)
    paths = {entry["path"] for entry in info["tree"]}
    for deleted in three_layer.deleted:
        assert "/" + deleted.strip("/") not in paths
    assert len(info["blobs"]) == 3


def test_converted_image_keeps_config_and_points_at_its_source(
    three_layer: ThreeLayerImage, registry: RunningRegistry
):
    source = push_layout(three_layer.layout_dir, "v1", registry.host)
    target = f"{registry.host}/three-layer:lazy"
    lazyfly("convert", "--plain-http", source, target)
    raw = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{target}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    manifest = json.loads(raw)
    assert manifest["subject"]["digest"] == _tag_digest(three_layer.layout_dir, "v1")
    assert manifest["layers"][-1]["annotations"]["io.lazyfly.bootstrap"] == "true"
    assert [layer["annotations"]["io.lazyfly.blob.source-layer"] for layer in manifest["layers"][:-1]] == (
        three_layer.layer_digests
    )


def test_oci_layout_source_converts_to_an_oci_layout(three_layer: ThreeLayerImage, tmp_path: Path):
    out = tmp_path / "lazy-layout"
    lazyfly("convert", f"oci:{three_layer.layout_dir}:v1", f"oci:{out}:lazy")
    assert (
        "check: OK"
        in lazyfly("check", f"oci:{out}:lazy", "--source", f"oci:{three_layer.layout_dir}:v1").stdout
    )


def test_converted_tree_equals_umoci_unpack(three_layer: ThreeLayerImage, tmp_path: Path):
    """Whiteouts and opaque directories resolve as umoci (and containerd) resolve them."""
    out = tmp_path / "lazy-layout"
    lazyfly("convert", f"oci:{three_layer.layout_dir}:v1", f"oci:{out}:lazy")
    unpacked = three_layer.expected_tree_dir(tmp_path)
    assert "check: OK" in lazyfly("check", f"oci:{out}:lazy", "--source", unpacked).stdout


def _tag_digest(layout: Path, tag: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    return next(
        m["digest"]
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == tag
    )


@pytest.mark.parametrize(
    ("skopeo_flags", "layer_type"),
    [
        (["--format", "v2s2"], "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        (["--dest-compress-format", "zstd"], "application/vnd.oci.image.layer.v1.tar+zstd"),
        (None, "application/vnd.oci.image.layer.v1.tar"),
    ],
    ids=["docker-v2-manifest", "zstd-layers", "uncompressed-layers"],
)
def test_docker_and_zstd_and_plain_sources_convert(
    three_layer: ThreeLayerImage,
    registry: RunningRegistry,
    skopeo_flags: list[str] | None,
    layer_type: str,
    tmp_path: Path,
):
    source = f"{registry.host}/variant:v1"
    if skopeo_flags is None:
        layout = _decompressed_copy(three_layer.layout_dir, "v1", tmp_path / "plain")
        lazyfly("push", "--plain-http", f"oci:{layout}:v1", source)
    else:
        subprocess.run(
            ["skopeo", "copy", "--dest-tls-verify=false", *skopeo_flags,
             f"oci:{three_layer.layout_dir}:v1", f"docker://{source}"],
            check=True, capture_output=True,
        )  # fmt: skip
    raw = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{source}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert {layer["mediaType"] for layer in json.loads(raw)["layers"]} == {layer_type}
    target = f"{registry.host}/variant:lazy"
    lazyfly("convert", "--plain-http", source, target)
    assert "check: OK" in lazyfly("check", "--plain-http", target, "--source", source).stdout


def _decompressed_copy(src: Path, tag: str, dst: Path) -> Path:
    """The same image with every layer stored as a plain tar (OCI `tar` media type)."""
    source, target = OciLayout(src).open(), OciLayout(dst).create()
    manifest, _, _ = source.read_manifest(tag)
    layers = [
        target.write_blob(gzip.decompress(source.read_blob(layer.digest)), OCI_LAYER_TAR)
        for layer in manifest.layers
    ]
    config = target.write_blob(source.read_blob(manifest.config.digest), manifest.config.media_type)
    document = dataclasses.replace(manifest, config=config, layers=layers)
    target.tag(target.write_blob(encode(document), manifest.media_type), tag)
    return dst
