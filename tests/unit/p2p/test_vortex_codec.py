import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lazyfly.errors import LocalProtocolError, RemoteProtocolError
from lazyfly.p2p.vortex.codec import (
    MAX_VALUE_LENGTH,
    NEED_DATA,
    FrameDecoder,
    encode_close,
    encode_download_piece,
    encode_error,
    encode_piece_content,
)
from lazyfly.p2p.vortex.messages import (
    Close,
    DownloadPiece,
    Error,
    PieceContent,
    PieceData,
    PieceEnd,
    PieceMetadata,
)

TASK = "5844f27a257287e9b734256bb25603d8005422ced8c0377f15063ec11963b25f"


def events(data: bytes, chunk: int = 1 << 30, eof: bool = True) -> list:
    decoder = FrameDecoder()
    out = []
    for start in range(0, len(data), chunk):
        decoder.feed(data[start : start + chunk])
        while (event := decoder.next_event()) is not NEED_DATA:
            out.append(event)
    if eof:
        decoder.feed(b"")
        while (event := decoder.next_event()) is not NEED_DATA:
            out.append(event)
    return out


def joined(found: list) -> list:
    """Piece data events merged, so that results do not depend on how bytes were split."""
    merged: list = []
    for event in found:
        if isinstance(event, PieceData) and merged and isinstance(merged[-1], PieceData):
            merged[-1] = PieceData(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def test_a_download_piece_frame_is_the_spec_bytes():
    # packet id 7, tag 0, value length 68; the 64-char task id; piece number 3 as u32
    expected = bytes([7, 0, 0, 0, 0, 68]) + TASK.encode() + bytes([0, 0, 0, 3])
    assert encode_download_piece(7, DownloadPiece(TASK, 3)) == expected
    assert events(expected) == [DownloadPiece(TASK, 3)]


def test_a_piece_content_frame_is_the_spec_bytes_and_its_raw_bytes_follow_uncounted():
    meta = PieceMetadata(2, 8 << 20, 5, "crc32c:123", "peer-1", 1, 3, 1_700_000_000)
    metadata = (
        struct.pack(">IQQ", 2, 8 << 20, 5) + struct.pack(">I", 10) + b"crc32c:123" + struct.pack(">I", 6)
        + b"peer-1" + struct.pack(">BQq", 1, 3, 1_700_000_000)
    )  # fmt: skip
    frame = encode_piece_content(9, PieceContent(meta))
    assert (
        frame
        == bytes([9, 1]) + struct.pack(">I", 4 + len(metadata)) + struct.pack(">I", len(metadata)) + metadata
    )
    assert joined(events(frame + b"hello")) == [PieceContent(meta), PieceData(b"hello"), PieceEnd()]


metadata_strategy = st.builds(
    PieceMetadata,
    number=st.integers(0, 2**32 - 1),
    offset=st.integers(0, 2**64 - 1),
    length=st.integers(0, 4096),
    digest=st.text(max_size=40),
    parent_id=st.text(max_size=80),
    traffic_type=st.integers(0, 255),
    cost=st.integers(0, 2**64 - 1),
    created_at=st.integers(-(2**63), 2**63 - 1),
)


@given(
    st.lists(
        st.one_of(
            st.builds(DownloadPiece, st.just(TASK), st.integers(0, 2**32 - 1)),
            st.builds(Error, st.integers(0, 255), st.text(max_size=200)),
            st.just(Close()),
            st.tuples(metadata_strategy, st.binary(max_size=4096)),
        ),
        max_size=8,
    ),
    st.integers(1, 97),
)
def test_frames_round_trip_however_the_bytes_are_split(messages, chunk):
    wire, expected = b"", []
    for message in messages:
        if isinstance(message, tuple):
            meta, raw = message
            meta = PieceMetadata(**{**meta.__dict__, "length": len(raw)})
            wire += encode_piece_content(1, PieceContent(meta)) + raw
            expected += [PieceContent(meta), *([PieceData(raw)] if raw else []), PieceEnd()]
        elif isinstance(message, DownloadPiece):
            wire += encode_download_piece(1, message)
            expected.append(message)
        elif isinstance(message, Error):
            wire += encode_error(1, message)
            expected.append(message)
        else:
            wire += encode_close(1)
            expected.append(message)
    assert joined(events(wire, chunk)) == expected


def test_an_unknown_tag_is_refused():
    with pytest.raises(RemoteProtocolError, match="unknown tag 9"):
        events(bytes([1, 9, 0, 0, 0, 0]))


def test_a_persistent_cache_tag_is_refused_by_name():
    with pytest.raises(RemoteProtocolError, match="DOWNLOAD_PERSISTENT_CACHE_PIECE"):
        events(bytes([1, 4, 0, 0, 0, 0]))


def test_a_length_over_the_limit_is_refused_from_the_header_alone():
    decoder = FrameDecoder()
    decoder.feed(bytes([1, 0]) + struct.pack(">I", 0xFFFFFFFF))  # claims 4 GiB, sends 6 bytes
    with pytest.raises(RemoteProtocolError, match="over"):
        decoder.next_event()
    with pytest.raises(RemoteProtocolError):  # stays broken
        decoder.next_event()


def test_a_piece_longer_than_the_limit_is_refused():
    meta = (
        struct.pack(">IQQ", 0, 0, 2 << 30)
        + struct.pack(">I", 0)
        + struct.pack(">I", 0)
        + struct.pack(">BQq", 0, 0, 0)
    )
    value = struct.pack(">I", len(meta)) + meta
    with pytest.raises(RemoteProtocolError, match="over"):
        events(bytes([1, 1]) + struct.pack(">I", len(value)) + value, eof=False)


@pytest.mark.parametrize(
    "wire",
    [
        bytes([1, 0, 0, 0]),  # half a header
        encode_download_piece(1, DownloadPiece(TASK, 1))[:-2],  # a value cut short
        encode_piece_content(1, PieceContent(PieceMetadata(0, 0, 10, "crc32c:1")))
        + b"12345",  # a short piece
    ],
)
def test_a_stream_that_ends_inside_a_frame_or_piece_is_an_error(wire):
    with pytest.raises(RemoteProtocolError, match="ended inside"):
        events(wire)


@pytest.mark.parametrize(
    "value",
    [
        b"x" * 68,  # not hex
        TASK.upper().encode() + bytes(4),  # not lower case
        TASK.encode(),  # too short
    ],
)
def test_malformed_download_piece_values_are_refused(value):
    with pytest.raises(RemoteProtocolError):
        events(bytes([1, 0]) + struct.pack(">I", len(value)) + value)


def test_metadata_lengths_that_do_not_add_up_are_refused():
    frame = bytearray(encode_piece_content(1, PieceContent(PieceMetadata(0, 0, 0, "crc32c:1"))))
    frame[6:10] = struct.pack(">I", 1000)  # metadata length lies
    with pytest.raises(RemoteProtocolError, match="metadata"):
        events(bytes(frame))


def test_what_the_protocol_cannot_carry_is_our_bug():
    with pytest.raises(LocalProtocolError):
        encode_download_piece(1, DownloadPiece("not-a-task", 0))
    with pytest.raises(LocalProtocolError):
        encode_download_piece(256, DownloadPiece(TASK, 0))
    with pytest.raises(LocalProtocolError):
        encode_error(1, Error(0, "x" * MAX_VALUE_LENGTH))
