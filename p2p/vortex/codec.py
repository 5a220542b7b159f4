"""Vortex frames ↔ bytes, with no I/O (as h11 does for HTTP): encoders and an incremental decoder.

A frame is a 6-byte header — packet id u8, tag u8, value length u32, big-endian — and the value.
PieceContent's value is metadata length u32 and the metadata; the piece's raw bytes follow the
frame and are not counted in its length. Use: `decoder.feed(data)` (b"" at end of stream), then
`decoder.next_event()` until it returns NEED_DATA.

Rules:
- Rule 1 (bounded): a value longer than MAX_VALUE_LENGTH, or a piece longer than MAX_PIECE_LENGTH,
  is refused from its header alone, before anything of that size is allocated or awaited.
- Rule 2 (strict): an unknown or unsupported tag, a value whose fields do not add up to its
  length, bad UTF-8, a task id that is not 64 lowercase hex digits, or a stream that ends inside a
  frame or piece raises RemoteProtocolError; once raised, the decoder stays broken.
- Rule 3: encoding something the protocol cannot carry raises LocalProtocolError (our bug).
"""

import re
import struct
from typing import Final

from lazyfly.errors import LocalProtocolError, RemoteProtocolError
from lazyfly.p2p.vortex.messages import (
    Close,
    DownloadPiece,
    Error,
    Event,
    PieceContent,
    PieceData,
    PieceEnd,
    PieceMetadata,
    Tag,
)

HEADER = struct.Struct(">BBI")
DOWNLOAD_PIECE = struct.Struct(">64sI")
U32 = struct.Struct(">I")
METADATA_HEAD = struct.Struct(">IQQ")  # number, offset, length
METADATA_TAIL = struct.Struct(">BQq")  # traffic type, cost, created at
MAX_VALUE_LENGTH: Final = 64 << 10
MAX_PIECE_LENGTH: Final = 1 << 30
_TASK_ID = re.compile(rb"^[0-9a-f]{64}$")


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


# --- encoding ----------------------------------------------------------------------------------


def _frame(packet_id: int, tag: Tag, value: bytes) -> bytes:
    if not 0 <= packet_id <= 0xFF:
        raise LocalProtocolError(f"vortex packet id {packet_id} is not a byte")
    if len(value) > MAX_VALUE_LENGTH:
        raise LocalProtocolError(f"vortex {tag.name} value of {len(value)} bytes is over {MAX_VALUE_LENGTH}")
    return HEADER.pack(packet_id, tag, len(value)) + value


def encode_download_piece(packet_id: int, message: DownloadPiece) -> bytes:
    """A DownloadPiece frame."""
    task = message.task_id.encode()
    if not _TASK_ID.match(task):
        raise LocalProtocolError(f"task id {message.task_id!r} is not 64 lowercase hex digits")
    if not 0 <= message.number <= 0xFFFFFFFF:
        raise LocalProtocolError(f"piece number {message.number} does not fit in u32")
    return _frame(packet_id, Tag.DOWNLOAD_PIECE, DOWNLOAD_PIECE.pack(task, message.number))


def encode_piece_content(packet_id: int, message: PieceContent) -> bytes:
    """A PieceContent frame; the caller sends `metadata.length` raw bytes right after it."""
    m = message.metadata
    digest, parent = m.digest.encode(), m.parent_id.encode()
    try:
        metadata = b"".join(
            [
                METADATA_HEAD.pack(m.number, m.offset, m.length),
                U32.pack(len(digest)), digest,
                U32.pack(len(parent)), parent,
                METADATA_TAIL.pack(m.traffic_type, m.cost, m.created_at),
            ]
        )  # fmt: skip
    except struct.error as exc:
        raise LocalProtocolError(f"piece {m.number}: metadata out of range: {exc}") from exc
    if m.length > MAX_PIECE_LENGTH:
        raise LocalProtocolError(f"piece {m.number} of {m.length} bytes is over {MAX_PIECE_LENGTH}")
    return _frame(packet_id, Tag.PIECE_CONTENT, U32.pack(len(metadata)) + metadata)


def encode_close(packet_id: int) -> bytes:
    """A Close frame."""
    return _frame(packet_id, Tag.CLOSE, b"")


def encode_error(packet_id: int, message: Error) -> bytes:
    """An Error frame."""
    if not 0 <= message.code <= 0xFF:
        raise LocalProtocolError(f"vortex error code {message.code} is not a byte")
    return _frame(packet_id, Tag.ERROR, bytes([message.code]) + message.message.encode())


# --- decoding ----------------------------------------------------------------------------------


class FrameDecoder:
    """Bytes in, events out, for one direction of one connection."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._piece_left = 0  # raw piece bytes still to hand out
        self._in_piece = False
        self._eof = False
        self._broken: RemoteProtocolError | None = None
        self.packet_id = 0  # of the last frame decoded

    def feed(self, data: bytes) -> None:
        """Add received bytes; b"" means the stream ended."""
        if self._eof and data:
            raise RemoteProtocolError("vortex: bytes fed after the end of the stream")
        if not data:
            self._eof = True
        self._buffer += data

    def next_event(self) -> Event | _NeedData:
        """The next event, or NEED_DATA until more bytes are fed."""
        if self._broken is not None:
            raise self._broken
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._broken = exc
            raise

    @property
    def at_frame_boundary(self) -> bool:
        """True when no frame or piece is partly received (a clean place for the stream to end)."""
        return not self._buffer and not self._in_piece

    def _next(self) -> Event | _NeedData:
        if self._in_piece:
            return self._piece_bytes()
        if len(self._buffer) < HEADER.size:
            return self._need("a frame header")
        packet_id, tag, length = HEADER.unpack_from(self._buffer)
        if tag not in Tag._value2member_map_:
            raise RemoteProtocolError(f"vortex: unknown tag {tag}")
        if Tag(tag) not in (Tag.DOWNLOAD_PIECE, Tag.PIECE_CONTENT, Tag.CLOSE, Tag.ERROR):
            raise RemoteProtocolError(f"vortex: tag {Tag(tag).name} is not served by this peer")
        if length > MAX_VALUE_LENGTH:
            raise RemoteProtocolError(
                f"vortex: {Tag(tag).name} value of {length} bytes is over {MAX_VALUE_LENGTH}"
            )
        if len(self._buffer) < HEADER.size + length:
            return self._need(f"a {Tag(tag).name} value of {length} bytes")
        value = bytes(self._buffer[HEADER.size : HEADER.size + length])
        del self._buffer[: HEADER.size + length]
        self.packet_id = packet_id
        frame = _decode_value(Tag(tag), value)
        if isinstance(frame, PieceContent):
            self._in_piece = True
            self._piece_left = frame.metadata.length
        return frame

    def _piece_bytes(self) -> Event | _NeedData:
        if self._piece_left == 0:
            self._in_piece = False
            return PieceEnd()
        if not self._buffer:
            return self._need(f"{self._piece_left} more piece bytes")
        take = min(self._piece_left, len(self._buffer))
        if take == len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(memoryview(self._buffer)[:take])
            del self._buffer[:take]
        self._piece_left -= take
        return PieceData(data)

    def _need(self, what: str) -> _NeedData:
        if self._eof and (self._buffer or self._in_piece):
            raise RemoteProtocolError(f"vortex: stream ended inside a frame, waiting for {what}")
        return NEED_DATA


def _decode_value(tag: Tag, value: bytes) -> DownloadPiece | PieceContent | Close | Error:
    if tag is Tag.DOWNLOAD_PIECE:
        if len(value) != DOWNLOAD_PIECE.size:
            raise RemoteProtocolError(
                f"vortex: DownloadPiece value of {len(value)} bytes, not {DOWNLOAD_PIECE.size}"
            )
        task, number = DOWNLOAD_PIECE.unpack(value)
        if not _TASK_ID.match(task):
            raise RemoteProtocolError(f"vortex: task id {task[:64]!r} is not 64 lowercase hex digits")
        return DownloadPiece(task.decode(), number)
    if tag is Tag.PIECE_CONTENT:
        return PieceContent(_decode_metadata(value))
    if tag is Tag.CLOSE:
        if value:
            raise RemoteProtocolError(f"vortex: Close frame with a value of {len(value)} bytes")
        return Close()
    if not value:
        raise RemoteProtocolError("vortex: Error frame without a code")
    return Error(value[0], _text(value[1:], "error message"))


def _decode_metadata(value: bytes) -> PieceMetadata:
    reader = _Reader(value)
    size = reader.u32("metadata length")
    if size != len(value) - U32.size:
        raise RemoteProtocolError(
            f"vortex: PieceContent says {size} metadata bytes, the frame holds {len(value) - 4}"
        )
    number, offset, length = reader.unpack(METADATA_HEAD, "piece number, offset and length")
    digest = _text(reader.take(reader.u32("digest length"), "digest"), "digest")
    parent = _text(reader.take(reader.u32("parent id length"), "parent id"), "parent id")
    traffic, cost, created = reader.unpack(METADATA_TAIL, "traffic type, cost and creation time")
    if reader.left:
        raise RemoteProtocolError(f"vortex: {reader.left} bytes after the piece metadata")
    if length > MAX_PIECE_LENGTH:
        raise RemoteProtocolError(f"vortex: piece {number} of {length} bytes is over {MAX_PIECE_LENGTH}")
    return PieceMetadata(number, offset, length, digest, parent, traffic, cost, created)


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"vortex: {what} is not UTF-8: {exc}") from None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, what: str) -> bytes:
        if size > self.left:
            raise RemoteProtocolError(f"vortex: {what} of {size} bytes runs past the metadata")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u32(self, what: str) -> int:
        return int(U32.unpack(self.take(U32.size, what))[0])

    def unpack(self, fmt: struct.Struct, what: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, what))
