"""Fuzz the Vortex decoder with mutated valid streams and random bytes (h11 `fuzz/` style).

Rule checked: whatever bytes arrive, split however, the decoder returns events or NEED_DATA or
raises RemoteProtocolError — never IndexError, struct.error, UnicodeDecodeError, MemoryError or a loop.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from lazyfly.errors import RemoteProtocolError
from lazyfly.p2p.vortex.codec import NEED_DATA, FrameDecoder, encode_download_piece, encode_piece_content
from lazyfly.p2p.vortex.messages import DownloadPiece, PieceContent, PieceMetadata

TASK = "3c3f230ef9f191dd2821510346a7bc138e4894bee9aee184ba250a3040701d2a"
VALID = (
    encode_download_piece(3, DownloadPiece(TASK, 42))
    + encode_piece_content(4, PieceContent(PieceMetadata(42, 1 << 22, 16, "crc32c:99", "p"))) + bytes(16)
)  # fmt: skip


def drain(data: bytes, chunk: int) -> None:
    decoder = FrameDecoder()
    try:
        for start in range(0, len(data), chunk):
            decoder.feed(data[start : start + chunk])
            for _ in range(len(data) + 8):  # every event consumes bytes or ends: bounded
                if decoder.next_event() is NEED_DATA:
                    break
        decoder.feed(b"")
        for _ in range(len(data) + 8):
            if decoder.next_event() is NEED_DATA:
                break
    except RemoteProtocolError:
        pass


@settings(max_examples=400)
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6), st.integers(1, 40)
)
def test_mutated_streams_only_raise_protocol_errors(mutations, chunk):
    data = bytearray(VALID)
    for position, byte in mutations:
        data[position] = byte
    drain(bytes(data), chunk)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(1, 64))
def test_random_bytes_only_raise_protocol_errors(data, chunk):
    drain(data, chunk)
