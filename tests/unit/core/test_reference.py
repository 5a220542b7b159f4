from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lazyfly.errors import InvalidArgument
from lazyfly.oci.reference import (
    OciLayoutRef,
    RegistryRef,
    check_digest,
    parse_oci_layout_ref,
    parse_registry_ref,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpine", RegistryRef("docker.io", "library/alpine", "latest")),
        ("alpine:3.19", RegistryRef("docker.io", "library/alpine", "3.19")),
        ("user/app", RegistryRef("docker.io", "user/app", "latest")),
        ("docker.io/alpine", RegistryRef("docker.io", "library/alpine", "latest")),
        ("localhost/app:v1", RegistryRef("localhost", "app", "v1")),
        ("localhost:5000/a/b/c:v1", RegistryRef("localhost:5000", "a/b/c", "v1")),
        ("127.0.0.1:5000/app", RegistryRef("127.0.0.1:5000", "app", "latest")),
        ("ghcr.io/org/app@" + DIGEST, RegistryRef("ghcr.io", "org/app", None, DIGEST)),
        ("ghcr.io/org/app:v2@" + DIGEST, RegistryRef("ghcr.io", "org/app", "v2", DIGEST)),
        (
            "registry.example.com:443/x_y.z-w:tag_1.0-rc",
            RegistryRef("registry.example.com:443", "x_y.z-w", "tag_1.0-rc"),
        ),
        ("[::1]:5000/app:t", RegistryRef("[::1]:5000", "app", "t")),
    ],
)
def test_parse_registry_ref_normalises_like_docker(text: str, expected: RegistryRef) -> None:
    assert parse_registry_ref(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " alpine",
        "Alpine",
        "host.io/UPPER/case",
        "host.io/app:",
        "host.io/app:-bad",
        "host.io/app:" + "t" * 129,
        "host.io/app@sha256:abc",
        "host.io/app@sha256:" + "AB" * 32,
        "host.io/app@md5",
        "host.io//app",
        "host.io/app/",
        "-bad.io/app",
        "host.io/a--b_",
    ],
)
def test_parse_registry_ref_rejects_malformed_text_naming_it(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_registry_ref(text)
    assert repr(text) in str(info.value) or text == ""


def test_reference_prefers_digest_over_tag() -> None:
    assert parse_registry_ref("h.io/a:v1@" + DIGEST).reference == DIGEST
    assert parse_registry_ref("h.io/a:v1").reference == "v1"
    assert RegistryRef("h.io", "a").reference == "latest"


def test_str_is_canonical_and_reparses() -> None:
    assert str(parse_registry_ref("alpine")) == "docker.io/library/alpine:latest"
    assert str(parse_registry_ref("h.io:5000/a@" + DIGEST)) == "h.io:5000/a@" + DIGEST


_component = st.from_regex(r"[a-z0-9]{1,5}([._-][a-z0-9]{1,5}){0,2}", fullmatch=True)
_refs = st.builds(
    RegistryRef,
    registry=st.sampled_from(["docker.io", "localhost:5000", "reg.example.com", "10.0.0.1:80"]),
    repository=st.lists(_component, min_size=2, max_size=4).map("/".join),
    tag=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
    digest=st.one_of(st.none(), st.from_regex(r"[0-9a-f]{64}", fullmatch=True).map("sha256:".__add__)),
).filter(lambda r: r.tag or r.digest)


@given(_refs)
def test_str_then_parse_round_trips(ref: RegistryRef) -> None:
    assert parse_registry_ref(str(ref)) == ref


@given(st.text(max_size=40))
def test_parse_registry_ref_never_fails_other_than_invalid_argument(text: str) -> None:
    try:
        parse_registry_ref(text)
    except InvalidArgument:
        pass


def test_check_digest_accepts_other_algorithms_by_grammar() -> None:
    assert check_digest("sha512:" + "0" * 128)
    assert check_digest("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8")
    with pytest.raises(InvalidArgument):
        check_digest("sha512:" + "0" * 64)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oci:/tmp/layout", OciLayoutRef(Path("/tmp/layout"), None)),
        ("oci:/tmp/layout:v1", OciLayoutRef(Path("/tmp/layout"), "v1")),
        ("oci:rel/dir:latest", OciLayoutRef(Path("rel/dir"), "latest")),
        ("oci:/odd:name/layout", OciLayoutRef(Path("/odd:name/layout"), None)),
        ("oci:/odd:name/layout:t", OciLayoutRef(Path("/odd:name/layout"), "t")),
        ("oci:/tmp/layout:", OciLayoutRef(Path("/tmp/layout:"), None)),
        ("oci:/tmp/a:b:c", OciLayoutRef(Path("/tmp/a:b"), "c")),
    ],
)
def test_parse_oci_layout_ref_splits_on_a_valid_trailing_tag_only(text: str, expected: OciLayoutRef) -> None:
    assert parse_oci_layout_ref(text) == expected


@pytest.mark.parametrize("text", ["oci:", "oci::tag", "docker://x", "/tmp/layout"])
def test_parse_oci_layout_ref_rejects_missing_path_or_prefix(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_oci_layout_ref(text)


def test_oci_layout_ref_str() -> None:
    assert str(OciLayoutRef(Path("/a"), "t")) == "oci:/a:t"
    assert str(OciLayoutRef(Path("/a"))) == "oci:/a"
