import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lazyfly.errors import InvalidArgument, NotFound, RemoteProtocolError
from lazyfly.oci.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    encode,
    layer_compression,
    parse_manifest,
    select_platform,
    sha256_digest,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def _manifest_json(**overrides: object) -> dict:
    obj = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": D2, "size": 20, "annotations": {"k": "v"}}],
    }
    obj.update(overrides)
    return obj


def test_parse_oci_manifest() -> None:
    manifest = parse_manifest(json.dumps(_manifest_json()).encode(), OCI_MANIFEST)
    assert isinstance(manifest, Manifest)
    assert manifest.config == Descriptor(OCI_CONFIG, D1, 10)
    assert manifest.layers == [Descriptor(OCI_LAYER_GZIP, D2, 20, {"k": "v"})]


def test_parse_docker_schema2_manifest_from_content_type_alone() -> None:
    obj = _manifest_json(
        config={"mediaType": DOCKER_CONFIG, "digest": D1, "size": 1},
        layers=[{"mediaType": DOCKER_LAYER_GZIP, "digest": D2, "size": 2}],
    )
    del obj["mediaType"]
    manifest = parse_manifest(json.dumps(obj).encode(), DOCKER_MANIFEST + "; charset=utf-8")
    assert isinstance(manifest, Manifest) and manifest.media_type == DOCKER_MANIFEST


def test_parse_docker_manifest_list_with_platforms() -> None:
    obj = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": D1,
                "size": 5,
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
    }
    index = parse_manifest(json.dumps(obj).encode(), None)
    assert isinstance(index, Index) and index.media_type == DOCKER_MANIFEST_LIST
    assert index.manifests[0].platform == {"os": "linux", "architecture": "amd64"}


def test_shape_decides_without_media_types() -> None:
    obj = _manifest_json()
    del obj["mediaType"]
    assert isinstance(parse_manifest(json.dumps(obj).encode(), "application/json"), Manifest)
    assert isinstance(parse_manifest(b'{"schemaVersion":2,"manifests":[]}'), Index)


@pytest.mark.parametrize(
    ("data", "media_type", "names"),
    [
        (b"not json", None, "JSON"),
        (b"[]", None, "object"),
        (json.dumps(_manifest_json(schemaVersion=1)).encode(), None, "schemaVersion"),
        (json.dumps(_manifest_json(layers="x")).encode(), None, "manifest.layers"),
        (
            json.dumps(_manifest_json(config={"mediaType": OCI_CONFIG, "digest": D1})).encode(),
            None,
            "config.size",
        ),
        (
            json.dumps(
                _manifest_json(config={"mediaType": OCI_CONFIG, "digest": "sha256:xyz", "size": 1})
            ).encode(),
            None,
            "manifest.config",
        ),
        (
            json.dumps(_manifest_json(layers=[{"mediaType": "x", "digest": D2, "size": -1}])).encode(),
            None,
            r"layers\[0\]\.size",
        ),
        (
            json.dumps(_manifest_json(layers=[{"mediaType": "x", "digest": D2, "size": True}])).encode(),
            None,
            r"layers\[0\]\.size",
        ),
        (json.dumps(_manifest_json(annotations={"a": 1})).encode(), None, "annotations"),
        (json.dumps(_manifest_json()).encode(), OCI_INDEX, "served as"),
        (json.dumps(_manifest_json(mediaType="text/plain")).encode(), None, "text/plain"),
        (b"{}", "application/vnd.docker.distribution.manifest.v1+prettyjws", "schema 1"),
        (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "manifests": [{"mediaType": "x", "digest": D1, "size": 1, "platform": {}}],
                }
            ).encode(),
            None,
            "platform.os",
        ),
    ],
)
def test_parse_manifest_rejects_bad_structure_naming_the_field(
    data: bytes, media_type: str | None, names: str
) -> None:
    with pytest.raises(RemoteProtocolError, match=names):
        parse_manifest(data, media_type)


def test_encode_is_compact_sorted_and_round_trips() -> None:
    manifest = parse_manifest(json.dumps(_manifest_json(annotations={"b": "2", "a": "1"})).encode())
    data = encode(manifest)
    assert b" " not in data and data.startswith(b'{"annotations":{"a":"1","b":"2"},"config"')
    assert parse_manifest(data) == manifest


_descriptors = st.builds(
    Descriptor,
    media_type=st.sampled_from([OCI_LAYER_TAR, OCI_LAYER_GZIP, OCI_MANIFEST]),
    digest=st.from_regex(r"[0-9a-f]{64}", fullmatch=True).map("sha256:".__add__),
    size=st.integers(0, 2**40),
    annotations=st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3),
    platform=st.one_of(
        st.none(),
        st.fixed_dictionaries({"os": st.just("linux"), "architecture": st.sampled_from(["amd64", "arm64"])}),
    ),
    urls=st.lists(st.just("https://example.com/b"), max_size=1),
)


@given(
    st.builds(
        Manifest,
        st.sampled_from([OCI_MANIFEST, DOCKER_MANIFEST]),
        _descriptors,
        st.lists(_descriptors, max_size=4),
    )
)
def test_manifest_encode_parse_round_trip(manifest: Manifest) -> None:
    assert parse_manifest(encode(manifest), manifest.media_type) == manifest


@given(
    st.builds(
        Index,
        st.lists(_descriptors, max_size=4),
        media_type=st.sampled_from([OCI_INDEX, DOCKER_MANIFEST_LIST]),
    )
)
def test_index_encode_parse_round_trip(index: Index) -> None:
    assert parse_manifest(encode(index)) == index


@given(st.binary(max_size=200))
def test_parse_manifest_fails_only_with_remote_protocol_error(data: bytes) -> None:
    try:
        parse_manifest(data)
    except RemoteProtocolError:
        pass


def _index(*platforms: dict | None) -> Index:
    return Index(
        [Descriptor(OCI_MANIFEST, d, 1, platform=p) for d, p in zip([D1, D2, D3], platforms, strict=False)]
    )


def test_select_platform_matches_os_arch_and_variant() -> None:
    index = _index(
        {"os": "linux", "architecture": "arm", "variant": "v7"},
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
    )
    assert select_platform(index, "linux/amd64").digest == D2
    assert select_platform(index, "linux/arm/v7").digest == D1
    assert select_platform(index, "linux/arm").digest == D1
    assert select_platform(index, "linux/arm64").digest == D3
    assert select_platform(_index({"os": "linux", "architecture": "arm64"}), "linux/arm64/v8").digest == D1


def test_select_platform_not_found_lists_what_exists() -> None:
    index = _index({"os": "linux", "architecture": "arm", "variant": "v7"}, None)
    with pytest.raises(NotFound, match=r"linux/s390x.*linux/arm/v7, unknown"):
        select_platform(index, "linux/s390x")
    with pytest.raises(InvalidArgument):
        select_platform(index, "linux")


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        (OCI_LAYER_TAR, "none"),
        (OCI_LAYER_GZIP, "gzip"),
        (OCI_LAYER_ZSTD, "zstd"),
        (DOCKER_LAYER_GZIP, "gzip"),
    ],
)
def test_layer_compression(media_type: str, expected: str) -> None:
    assert layer_compression(media_type) == expected


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/octet-stream",
    ],
)
def test_layer_compression_rejects_foreign_and_unknown_types(media_type: str) -> None:
    with pytest.raises(InvalidArgument, match="unsupported layer media type"):
        layer_compression(media_type)


def test_sha256_digest() -> None:
    assert sha256_digest(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
