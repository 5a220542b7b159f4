"""lazyfly.api.fusefs: the fusefs API models round-trip through JSON and refuse bad bodies by key."""

import json

import pytest

from lazyfly.api.fusefs import (
    AddImageRequest,
    ApiError,
    BackendSpec,
    CacheStats,
    DaemonInfo,
    ImageInfo,
    PrefetchSpec,
    image_path,
    parse_json,
)
from lazyfly.errors import InvalidArgument


def through_json(data: object) -> object:
    return json.loads(json.dumps(data))


def test_a_full_add_request_round_trips():
    request = AddImageRequest(
        id="img-1",
        reference="127.0.0.1:5000/lib/app:v1",
        backend=BackendSpec("proxy", "http://127.0.0.1:4001", plain_http=True),
        prefetch=PrefetchSpec("all", ["/bin/sh"], bandwidth=1 << 20, workers=4),
        merge_limit=4 << 20,
        read_ahead=0,
    )
    assert AddImageRequest.from_json(through_json(request.to_json())) == request


def test_an_add_request_needs_only_id_and_reference():
    request = AddImageRequest.from_json({"id": "a", "reference": "oci:/layout"})
    assert request.backend == BackendSpec()
    assert request.prefetch == PrefetchSpec()
    assert request.merge_limit == 1 << 20
    assert request.read_ahead == 64 << 20


def test_responses_round_trip():
    image = ImageInfo("a", "oci:/x", "local", ["sha256:" + "0" * 64], CacheStats(cache_hits=3, inflight=1))
    daemon = DaemonInfo("RUNNING", "0.1.0", "/mnt/lazy", [image])
    assert DaemonInfo.from_json(through_json(daemon.to_json())) == daemon
    error = ApiError("NotFound", "image a is not mounted")
    assert ApiError.from_json(through_json(error.to_json())) == error


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"reference": "x"}, "id: missing"),
        ({"id": "a", "reference": "x", "refrence": "y"}, "refrence: unknown key"),
        ({"id": "a", "reference": "x", "backend": {"kind": "ftp"}}, "backend.kind: expected one of"),
        (
            {"id": "a", "reference": "x", "backend": {"plain_http": "yes"}},
            "backend.plain_http: expected bool",
        ),
        ({"id": "a", "reference": "x", "prefetch": {"workers": 0}}, "prefetch.workers: 0"),
        (
            {"id": "a", "reference": "x", "prefetch": {"files": ["/a", 3]}},
            r"prefetch.files\[1\]: expected str",
        ),
        ({"id": "a", "reference": "x", "merge_limit": True}, "merge_limit: expected int"),
        ({"id": "a", "reference": "x", "merge_limit": 0}, "merge_limit: 0 is not positive"),
        ({"id": "a", "reference": "x", "read_ahead": -1}, "read_ahead: -1 is negative"),
        ({"id": "", "reference": "x"}, "id: empty"),
        (["id", "a"], "expected a mapping"),
    ],
)
def test_a_bad_add_request_is_refused_naming_the_key(body: object, message: str):
    with pytest.raises(InvalidArgument, match=message):
        AddImageRequest.from_json(body)


def test_parse_json_refuses_what_is_not_json():
    assert parse_json(b'{"a": 1}', "body") == {"a": 1}
    with pytest.raises(InvalidArgument, match="request body: not valid JSON"):
        parse_json(b"{", "request body")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        parse_json(b"\xff", "request body")


def test_image_path_quotes_the_id():
    assert image_path("a.b-c_d") == "/api/v1/images/a.b-c_d"
    assert image_path("a/b") == "/api/v1/images/a%2Fb"
