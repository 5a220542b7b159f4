"""`lazyfly convert` of a three-layer umoci image with whiteouts, through a real registry."""

import json
import subprocess
from pathlib import Path

import pytest
from fixtures.registry import RunningRegistry
from fixtures.umoci_image import ThreeLayerImage, make_three_layer_image, push_layout

from integration.cli import lazyfly

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
    assert "check: OK" in lazyfly("check", f"oci:{out}:lazy", "--source", f"oci:{three_layer.layout_dir}:v1").stdout


def test_converted_tree_equals_umoci_unpack(three_layer: ThreeLayerImage, tmp_path: Path):
    """Whiteouts and opaque directories resolve as umoci (and containerd) resolve them."""
    out = tmp_path / "lazy-layout"
    lazyfly("convert", f"oci:{three_layer.layout_dir}:v1", f"oci:{out}:lazy")
    unpacked = three_layer.expected_tree_dir(tmp_path)
    assert "check: OK" in lazyfly("check", f"oci:{out}:lazy", "--source", unpacked).stdout


def _tag_digest(layout: Path, tag: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    return next(
        m["digest"] for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag
    )
