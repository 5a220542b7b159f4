import struct

import pytest

from lazyfly.errors import RemoteProtocolError
from lazyfly.fusefs import fuse_wire


def test_the_init_request_is_a_40_byte_header_and_a_16_byte_body():
    message = fuse_wire.init_request(unique=77, max_readahead=4 << 20)
    length, opcode, unique, nodeid = struct.unpack_from("<IIQQ", message)
    assert (length, opcode, unique, nodeid) == (56, 26, 77, 0) == (len(message), fuse_wire.FUSE_INIT, 77, 0)
    major, minor, readahead, flags = struct.unpack_from("<IIII", message, 40)
    assert (major, minor, readahead) == (7, 31, 4 << 20)
    splice_flags = 1 << 7 | 1 << 8 | 1 << 9
    assert flags & splice_flags == 0


def test_an_init_answer_for_our_request_is_accepted():
    fuse_wire.check_init_reply(struct.pack("<IiQ", 80, 0, 77) + bytes(64), unique=77)


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"\x10\x00", "shorter"),
        (struct.pack("<IiQ", 16, 0, 78), "not ours"),
        (struct.pack("<IiQ", 99, 0, 77), "not ours"),
        (struct.pack("<IiQ", 16, -71, 77), "errno 71"),
    ],
)
def test_a_wrong_or_refused_init_answer_is_an_error(reply, match):
    with pytest.raises(RemoteProtocolError, match=match):
        fuse_wire.check_init_reply(reply, unique=77)


def test_notify_resend_is_a_bare_out_header_with_code_7_and_no_unique():
    assert fuse_wire.notify_resend() == struct.pack("<IiQ", 16, 7, 0)
