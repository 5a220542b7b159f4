import zlib

import pytest

from lazyfly.checksum import crc32c_digest, parse, verify
from lazyfly.errors import Corrupt, InvalidArgument


def test_crc32c_of_the_standard_check_string():
    assert crc32c_digest(b"123456789") == "crc32c:3808858755"  # 0xE3069283


def test_crc32_ieee_digests_from_reference_peers_are_accepted():
    verify(f"crc32:{zlib.crc32(b'piece')}", b"piece", "piece 1")
    with pytest.raises(Corrupt, match="piece 1: crc32 is"):
        verify(f"crc32:{zlib.crc32(b'piece') ^ 1}", b"piece", "piece 1")


@pytest.mark.parametrize(
    "digest", ["sha256:1", "crc32c", "crc32c:-1", "crc32c:0x10", "crc32c:4294967296", ""]
)
def test_malformed_digests_are_refused(digest):
    with pytest.raises(InvalidArgument):
        parse(digest)
