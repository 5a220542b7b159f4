import pytest

from lazyfly.errors import InvalidArgument
from lazyfly.p2p.proxy.headers import (
    ByteRange,
    DownloadOptions,
    ProxyRules,
    RangeNotSatisfiable,
    download_options,
    parse_range,
)

BLOB = "http://registry:5000/v2/app/blobs/sha256:" + "a" * 64


def test_blob_gets_go_through_p2p_and_the_rest_passes_through():
    rules = ProxyRules()
    assert rules.use_p2p("GET", BLOB, DownloadOptions())
    assert not rules.use_p2p("HEAD", BLOB, DownloadOptions())
    assert not rules.use_p2p("GET", "http://registry:5000/v2/app/manifests/v1", DownloadOptions())
    assert rules.use_p2p("GET", "http://files/model.bin", DownloadOptions(use_p2p=True))


def test_dragonfly_headers_are_read_whatever_their_case():
    options = download_options(
        {
            "x-dragonfly-tag": "t",
            "X-Dragonfly-Application": "app",
            "X-Dragonfly-Priority": "3",
            "X-Dragonfly-Filtered-Query-Params": "Signature&Expires",
            "X-Dragonfly-Piece-Length": str(8 << 20),
            "X-Dragonfly-Registry": "https://index.docker.io",
            "X-Dragonfly-Prefetch": "true",
        }
    )
    assert options == DownloadOptions(
        "t", "app", 3, ("Signature", "Expires"), 8 << 20, "https://index.docker.io", False, True
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Dragonfly-Priority": "9"},
        {"X-Dragonfly-Piece-Length": "1024"},
        {"X-Dragonfly-Prefetch": "yes"},
    ],
)
def test_malformed_dragonfly_headers_are_refused_by_name(headers):
    with pytest.raises(InvalidArgument, match=next(iter(headers))):
        download_options(headers)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=100-", ByteRange(100, 999)),
        ("bytes=-10", ByteRange(990, 999)),
        ("bytes=900-5000", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),
    ],
)
def test_one_range_is_clipped_to_the_content(value, expected):
    assert parse_range(value, 1000) == expected
    assert expected.content_range(1000) == f"bytes {expected.start}-{expected.end}/1000"


@pytest.mark.parametrize("value", ["bytes=0-1,5-6", "items=0-1", "bytes=-", "bytes=9-3"])
def test_malformed_or_multiple_ranges_are_refused(value):
    with pytest.raises(InvalidArgument):
        parse_range(value, 1000)


@pytest.mark.parametrize("value", ["bytes=1000-", "bytes=-0"])
def test_ranges_outside_the_content_are_not_satisfiable(value):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(value, 1000)
