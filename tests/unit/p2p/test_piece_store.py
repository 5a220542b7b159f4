import os

import pytest

from lazyfly.checksum import crc32c_digest
from lazyfly.errors import Corrupt, NotFound
from lazyfly.p2p.storage.piece_store import PieceStore

TASK = "a" * 64
OTHER = "b" * 64
PIECE = 4 << 20


@pytest.fixture
def store(tmp_path):
    opened = PieceStore(tmp_path / "peer")
    yield opened
    opened.close()


def content(length: int) -> bytes:
    return os.urandom(length)


def test_a_piece_is_recorded_only_after_its_checksum_matches(store):
    store.register(TASK, "http://o/blob", 2 * PIECE + 10, PIECE)
    data = content(PIECE)
    with pytest.raises(Corrupt, match="piece 0"):
        store.write_piece(TASK, 0, data, digest=crc32c_digest(data[:-1] + b"x"))
    assert store.meta.pieces_of(TASK) == []
    record = store.write_piece(TASK, 0, data, digest=crc32c_digest(data))
    assert (record.offset, record.length) == (0, PIECE)
    assert store.read_piece(TASK, 0)[1] == data


def test_a_piece_of_the_wrong_length_is_refused(store):
    store.register(TASK, "http://o/blob", PIECE + 10, PIECE)
    with pytest.raises(Corrupt, match="expected 10"):
        store.write_piece(TASK, 1, b"short")


def test_a_tasks_pieces_are_one_prefix_scan_and_other_tasks_stay_out(store):
    for task in (TASK, OTHER):
        store.register(task, f"http://o/{task[0]}", 12 * PIECE, PIECE)
    for number in (11, 2, 0, 10, 1):
        store.write_piece(TASK, number, content(PIECE))
    store.write_piece(OTHER, 0, content(PIECE))
    assert [record.number for record in store.meta.pieces_of(TASK)] == [0, 1, 2, 10, 11]
    assert [record.number for record in store.meta.pieces_of(OTHER)] == [0]


def test_a_finished_task_survives_a_restart(tmp_path):
    store = PieceStore(tmp_path / "peer")
    store.register(TASK, "http://o/blob", PIECE + 5, PIECE)
    pieces = [content(PIECE), content(5)]
    with pytest.raises(NotFound, match=r"pieces \[1\]"):
        store.write_piece(TASK, 0, pieces[0]) and store.finish(TASK)
    store.write_piece(TASK, 1, pieces[1])
    assert store.finish(TASK).finished
    store.close()
    reopened = PieceStore(tmp_path / "peer")
    try:
        assert reopened.meta.task(TASK).finished
        assert b"".join(reopened.read_piece(TASK, n)[1] for n in (0, 1)) == b"".join(pieces)
    finally:
        reopened.close()


def test_a_corrupted_stored_piece_is_caught_on_read(store):
    store.register(TASK, "http://o/blob", PIECE, PIECE)
    store.write_piece(TASK, 0, content(PIECE))
    path = store.content.path(TASK)
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(Corrupt, match="stored task"):
        store.read_piece(TASK, 0)


def test_deleting_a_task_forgets_it_and_frees_its_file(store):
    store.register(TASK, "http://o/blob", PIECE, PIECE)
    store.write_piece(TASK, 0, content(PIECE))
    assert store.delete(TASK) >= PIECE
    assert store.meta.task(TASK) is None
    assert store.meta.pieces_of(TASK) == []
    assert not store.content.path(TASK).exists()
