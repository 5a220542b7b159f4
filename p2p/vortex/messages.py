"""Vortex 0.1.5 messages, one dataclass per tag this peer speaks (pure data).

Tags: 0 DownloadPiece, 1 PieceContent, 254 Close, 255 Error. Tags 2–7 (persistent and cache
variants) belong to the protocol but not to what this peer serves; the codec refuses them by name.
After a PieceContent header, exactly `metadata.length` raw piece bytes follow on the stream; the
decoder hands them out as PieceData events and ends with PieceEnd.
"""

import enum
from dataclasses import dataclass


class Tag(enum.IntEnum):
    """The tag byte of a frame."""

    DOWNLOAD_PIECE = 0
    PIECE_CONTENT = 1
    DOWNLOAD_PERSISTENT_PIECE = 2
    PERSISTENT_PIECE_CONTENT = 3
    DOWNLOAD_PERSISTENT_CACHE_PIECE = 4
    PERSISTENT_CACHE_PIECE_CONTENT = 5
    DOWNLOAD_CACHE_PIECE = 6
    CACHE_PIECE_CONTENT = 7
    CLOSE = 254
    ERROR = 255


class ErrorCode(enum.IntEnum):
    """The code byte of an Error frame."""

    UNKNOWN = 0
    INVALID_ARGUMENT = 1
    NOT_FOUND = 2
    INTERNAL = 3


class TrafficType(enum.IntEnum):
    """Where a piece's bytes came from, as the sender tells."""

    BACK_TO_SOURCE = 0
    REMOTE_PEER = 1
    LOCAL_PEER = 2


@dataclass(frozen=True)
class DownloadPiece:
    """Ask for piece `number` of task `task_id` (64 lowercase hex digits)."""

    task_id: str
    number: int


@dataclass(frozen=True)
class PieceMetadata:
    """What the sender says of a piece it is about to stream."""

    number: int
    offset: int
    length: int
    digest: str  # "crc32c:<decimal>" (or "crc32:<decimal>" from reference peers)
    parent_id: str = ""
    traffic_type: int = TrafficType.REMOTE_PEER
    cost: int = 0  # seconds
    created_at: int = 0  # unix seconds


@dataclass(frozen=True)
class PieceContent:
    """The header of a piece: its metadata; `metadata.length` raw bytes follow."""

    metadata: PieceMetadata


@dataclass(frozen=True)
class PieceData:
    """Some of the raw bytes of the piece being received, in order."""

    data: bytes


@dataclass(frozen=True)
class PieceEnd:
    """The piece's last raw byte has been handed out."""


@dataclass(frozen=True)
class Close:
    """The sender is done with this connection."""


@dataclass(frozen=True)
class Error:
    """The sender could not do what was asked."""

    code: int
    message: str


Frame = DownloadPiece | PieceContent | Close | Error
Event = Frame | PieceData | PieceEnd
