"""How a task is cut into pieces (pure): Dragonfly's piece length rule and the pieces it gives.

Rule: the piece length is the next power of two of content_length / 500, clamped to
[MIN_PIECE_LENGTH, MAX_PIECE_LENGTH]; a user may choose one of at least MIN_PIECE_LENGTH. Pieces are
numbered from 0; every piece has that length except the last, which holds the rest.
"""

from dataclasses import dataclass

from lazyfly.errors import InvalidArgument

MIN_PIECE_LENGTH = 4 << 20
MAX_PIECE_LENGTH = 64 << 20
PIECES_PER_TASK = 500


@dataclass(frozen=True)
class Piece:
    """Piece `number` of a task: `length` bytes at `offset`."""

    number: int
    offset: int
    length: int


def piece_length_for(content_length: int, chosen: int | None = None) -> int:
    """The piece length of a task of `content_length` bytes (or the user's `chosen` one)."""
    if content_length < 0:
        raise InvalidArgument(f"content length {content_length} is negative")
    if chosen is not None:
        if chosen < MIN_PIECE_LENGTH:
            raise InvalidArgument(f"piece length {chosen} is below the minimum {MIN_PIECE_LENGTH}")
        return chosen
    wanted = content_length // PIECES_PER_TASK
    power = 1 << max(0, (wanted - 1).bit_length()) if wanted > 1 else 1
    return min(MAX_PIECE_LENGTH, max(MIN_PIECE_LENGTH, power))


def piece_count(content_length: int, piece_length: int) -> int:
    """How many pieces a task of `content_length` bytes has."""
    return -(-content_length // piece_length)


def piece(number: int, content_length: int, piece_length: int) -> Piece:
    """Piece `number`; InvalidArgument if the task has no such piece."""
    if not 0 <= number < piece_count(content_length, piece_length):
        raise InvalidArgument(f"piece {number} is outside a task of {content_length} bytes")
    offset = number * piece_length
    return Piece(number, offset, min(piece_length, content_length - offset))


def pieces(content_length: int, piece_length: int) -> list[Piece]:
    """Every piece of a task, in order."""
    return [piece(n, content_length, piece_length) for n in range(piece_count(content_length, piece_length))]
