import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lazyfly.backend.byte_range import check_range, parse_content_range, past_end, range_header
from lazyfly.errors import InvalidArgument, NotFound, RemoteProtocolError

DIGEST = "sha256:" + hashlib.sha256(b"blob").hexdigest()


def test_range_header_names_first_and_last_byte():
    assert range_header(0, 1) == "bytes=0-0"
    assert range_header(4096, 4096) == "bytes=4096-8191"


@given(st.integers(0, 2**50), st.integers(1, 2**40), st.integers(0, 2**10))
def test_content_range_round_trips(offset: int, length: int, extra: int):
    last = offset + length - 1
    assert parse_content_range(f"bytes {offset}-{last}/{last + 1 + extra}") == (
        offset,
        last,
        last + 1 + extra,
    )
    assert parse_content_range(f"bytes {offset}-{last}/*") == (offset, last, None)


@pytest.mark.parametrize(
    "value", ["", "bytes 5-4/10", "bytes 0-10/10", "bytes */10", "items 0-1/2", "bytes 0-1", "bytes -1-2/3"]
)
def test_malformed_content_range_is_a_remote_protocol_error(value: str):
    with pytest.raises(RemoteProtocolError):
        parse_content_range(value)


@pytest.mark.parametrize("digest, offset, length", [(DIGEST, -1, 1), (DIGEST, 0, -1), ("sha256:abc", 0, 1)])
def test_bad_ranges_are_invalid_arguments(digest: str, offset: int, length: int):
    with pytest.raises(InvalidArgument):
        check_range(digest, offset, length)


def test_past_end_is_not_found_naming_digest_range_and_size():
    error = past_end(DIGEST, 90, 20, 100)
    assert isinstance(error, NotFound)
    assert f"bytes 90-109 of blob {DIGEST}" in str(error) and "100 bytes" in str(error)
