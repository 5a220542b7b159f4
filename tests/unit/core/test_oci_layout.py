"""Tests for lazyfly/oci/layout.py (named apart from test_layout.py, which belongs to format/layout.py)."""

import json
from pathlib import Path

import pytest

from lazyfly.errors import AlreadyExists, Corrupt, InvalidArgument, NotFound
from lazyfly.oci.layout import OciLayout
from lazyfly.oci.manifest import (
    ANNOTATION_REF_NAME,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    encode,
    sha256_digest,
)


@pytest.fixture
def layout(tmp_path: Path) -> OciLayout:
    return OciLayout(tmp_path / "img").create()


def _image(layout: OciLayout, payload: bytes = b"layer") -> Descriptor:
    config = layout.write_blob(b'{"architecture":"amd64","os":"linux"}', OCI_CONFIG)
    layer = layout.write_blob(payload, OCI_LAYER_TAR)
    return layout.write_blob(encode(Manifest(OCI_MANIFEST, config, [layer])), OCI_MANIFEST)


def test_create_writes_marker_and_empty_index(layout: OciLayout) -> None:
    assert json.loads((layout.path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout.path / "index.json").read_text())
    assert index == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    assert (layout.path / "blobs" / "sha256").is_dir()


def test_create_refuses_an_existing_layout_unless_asked(layout: OciLayout) -> None:
    with pytest.raises(AlreadyExists):
        OciLayout(layout.path).create()
    assert OciLayout(layout.path).create(exist_ok=True).index() == Index([])


def test_open_validates(tmp_path: Path, layout: OciLayout) -> None:
    assert OciLayout(layout.path).open().index() == Index([])
    with pytest.raises(NotFound, match="no oci-layout"):
        OciLayout(tmp_path / "nothing").open()
    (layout.path / "oci-layout").write_text('{"imageLayoutVersion":"2.0.0"}')
    with pytest.raises(Corrupt, match=r"2\.0\.0"):
        OciLayout(layout.path).open()


def test_write_and_read_blob(layout: OciLayout) -> None:
    descriptor = layout.write_blob(b"hello", "application/octet-stream", {"a": "b"})
    assert descriptor == Descriptor("application/octet-stream", sha256_digest(b"hello"), 5, {"a": "b"})
    assert layout.has_blob(descriptor.digest)
    assert layout.blob_path(descriptor.digest).read_bytes() == b"hello"
    assert layout.read_blob(descriptor.digest) == b"hello"
    assert [p.name for p in (layout.path / "blobs" / "sha256").iterdir()] == [descriptor.digest[7:]]


def test_read_blob_verifies_and_names_missing(layout: OciLayout) -> None:
    descriptor = layout.write_blob(b"hello", "x")
    layout.blob_path(descriptor.digest).write_bytes(b"HELLO")
    with pytest.raises(Corrupt, match=descriptor.digest):
        layout.read_blob(descriptor.digest)
    missing = "sha256:" + "0" * 64
    with pytest.raises(NotFound, match=missing):
        layout.read_blob(missing)


def test_blob_path_refuses_digests_that_could_escape(layout: OciLayout) -> None:
    for bad in ["sha256:../../etc/passwd", "../x:y", "sha256:abc"]:
        with pytest.raises(InvalidArgument):
            layout.blob_path(bad)


def test_add_blob_file_moves_and_hashes(tmp_path: Path, layout: OciLayout) -> None:
    src = tmp_path / "big.tar"
    src.write_bytes(b"x" * 3_000_000)
    descriptor = layout.add_blob_file(src, OCI_LAYER_TAR)
    assert descriptor.digest == sha256_digest(b"x" * 3_000_000) and descriptor.size == 3_000_000
    assert not src.exists()
    assert layout.read_blob(descriptor.digest) == b"x" * 3_000_000


def test_tag_replaces_older_entry_and_resolve_finds_it(layout: OciLayout) -> None:
    first, second = _image(layout, b"one"), _image(layout, b"two")
    layout.tag(first, "v1")
    layout.tag(first, "latest")
    layout.tag(second, "v1")
    assert layout.tags() == ["latest", "v1"]
    assert layout.resolve("v1").digest == second.digest
    assert layout.resolve("v1").annotations == {ANNOTATION_REF_NAME: "v1"}
    with pytest.raises(NotFound, match=r"'v9'.*latest, v1"):
        layout.resolve("v9")
    with pytest.raises(NotFound, match="name a tag"):
        layout.resolve(None)
    with pytest.raises(InvalidArgument):
        layout.tag(first, "bad tag")


def test_resolve_none_returns_the_only_manifest(layout: OciLayout) -> None:
    with pytest.raises(NotFound, match="0 manifests"):
        layout.resolve(None)
    descriptor = layout.add_manifest(_image(layout))
    layout.add_manifest(descriptor)
    assert layout.resolve(None) == descriptor


def test_read_manifest_resolves_an_index_by_platform(layout: OciLayout) -> None:
    amd = _image(layout, b"amd")
    arm = _image(layout, b"arm")
    index = Index(
        [
            Descriptor(OCI_MANIFEST, amd.digest, amd.size, platform={"os": "linux", "architecture": "amd64"}),
            Descriptor(OCI_MANIFEST, arm.digest, arm.size, platform={"os": "linux", "architecture": "arm64"}),
        ]
    )
    layout.tag(layout.write_blob(encode(index), OCI_INDEX), "multi")
    manifest, data, descriptor = layout.read_manifest("multi", platform="linux/arm64")
    assert descriptor.digest == arm.digest and sha256_digest(data) == arm.digest
    assert layout.read_blob(manifest.layers[0].digest) == b"arm"
    with pytest.raises(NotFound, match="linux/amd64, linux/arm64"):
        layout.read_manifest("multi", platform="linux/riscv64")


def test_no_temp_files_are_left_behind(layout: OciLayout) -> None:
    layout.tag(_image(layout), "t")
    leftovers = [p for p in layout.path.rglob(".*")]
    assert leftovers == []
