import pytest
from hypothesis import given
from hypothesis import strategies as st

from lazyfly.errors import InvalidArgument
from lazyfly.p2p.task.pieces import MAX_PIECE_LENGTH, MIN_PIECE_LENGTH, piece, piece_length_for, pieces

MiB = 1 << 20


@pytest.mark.parametrize(
    ("content_length", "expected"),
    [
        (0, 4 * MiB),
        (1, 4 * MiB),
        (200 * MiB, 4 * MiB),  # 200 MiB / 500 = 0.4 MiB -> clamped up
        (4000 * MiB, 8 * MiB),  # 8 MiB exactly
        (4001 * MiB, 16 * MiB),  # just over: the next power of two
        (100 * 1024 * MiB, 64 * MiB),  # 100 GiB: clamped down
    ],
)
def test_the_piece_length_is_the_next_power_of_two_of_a_500th_clamped(content_length, expected):
    assert piece_length_for(content_length) == expected


def test_a_chosen_piece_length_below_the_minimum_is_refused():
    assert piece_length_for(10, chosen=8 * MiB) == 8 * MiB
    with pytest.raises(InvalidArgument, match="below the minimum"):
        piece_length_for(10, chosen=MiB)


@given(st.integers(min_value=1, max_value=1 << 40))
def test_pieces_cover_the_content_exactly_once(content_length):
    length = piece_length_for(content_length)
    assert MIN_PIECE_LENGTH <= length <= MAX_PIECE_LENGTH
    count = -(-content_length // length)
    if count <= 2000:
        cut = pieces(content_length, length)
        assert sum(p.length for p in cut) == content_length
        assert all(p.offset == p.number * length for p in cut)
    last = piece(count - 1, content_length, length)
    assert last.offset + last.length == content_length
    with pytest.raises(InvalidArgument):
        piece(count, content_length, length)
