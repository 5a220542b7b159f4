import pytest

from lazyfly.range_sink import feed, range_length


class Recorder:
    def __init__(self, piece_sizes: list[int]) -> None:
        self.piece_sizes = piece_sizes
        self.buffer = bytearray(max(piece_sizes, default=0))
        self.events: list[object] = []

    def restart(self) -> None:
        self.events.append("restart")

    def take(self, piece: memoryview) -> None:
        self.events.append(bytes(piece))


def test_feed_starts_a_delivery_then_hands_over_each_piece_in_order():
    sink = Recorder([3, 1, 2])
    feed(sink, b"abcdef")
    assert sink.events == ["restart", b"abc", b"d", b"ef"] and range_length(sink) == 6


def test_feed_refuses_data_of_another_length_before_taking_anything():
    sink = Recorder([3, 1])
    with pytest.raises(ValueError, match="5 bytes for a sink of 4"):
        feed(sink, b"abcde")
    assert sink.events == []
