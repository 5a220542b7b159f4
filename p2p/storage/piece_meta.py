"""Task and piece metadata in RocksDB (rocksdict): small, boring, and nothing but records.

Two column families: `tasks` (task id → TaskRecord) and `pieces` (`{task_id}-{number}` →
PieceRecord) with a 64-byte fixed prefix extractor, so that the pieces of one task are one prefix
scan. Writes go through `transaction()`, a WriteBatch applied atomically when the block ends (and
dropped if it raises). No file content is touched here (STYLE 5); piece_store.py records a piece only
after its bytes are written and checked.
"""

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from rocksdict import Options, Rdict, ReadOptions, SliceTransform, WriteBatch

from lazyfly.errors import Corrupt

TASK_ID_LENGTH = 64
TASKS, PIECES = "tasks", "pieces"


@dataclass
class TaskRecord:
    """What a peer knows of a task."""

    task_id: str
    url: str
    content_length: int
    piece_length: int
    finished: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0  # LRU order for the disk GC


@dataclass
class PieceRecord:
    """A piece whose bytes are stored and checked."""

    number: int
    offset: int
    length: int
    digest: str
    parent_id: str = ""
    cost_ms: int = 0


def piece_key(task_id: str, number: int) -> bytes:
    """The key of piece `number` of `task_id` (the reference client's layout)."""
    return f"{task_id}-{number}".encode()


class Batch:
    """The writes of one transaction."""

    def __init__(self, meta: "PieceMeta") -> None:
        self.meta = meta
        self.batch = WriteBatch(raw_mode=True)

    def put_task(self, record: TaskRecord) -> None:
        """Write a task record."""
        self.batch.put(record.task_id.encode(), json.dumps(asdict(record)).encode(), self.meta.tasks)

    def put_piece(self, task_id: str, record: PieceRecord) -> None:
        """Write a piece record."""
        self.batch.put(
            piece_key(task_id, record.number), json.dumps(asdict(record)).encode(), self.meta.pieces
        )

    def delete_task(self, task_id: str) -> None:
        """Delete a task and all its pieces."""
        self.batch.delete(task_id.encode(), self.meta.tasks)
        for record in self.meta.pieces_of(task_id):
            self.batch.delete(piece_key(task_id, record.number), self.meta.pieces)


class PieceMeta:
    """The metadata database at `path`."""

    def __init__(self, path: Path) -> None:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        pieces = Options(raw_mode=True)
        pieces.set_prefix_extractor(SliceTransform.create_fixed_prefix(TASK_ID_LENGTH))
        self.db = Rdict(str(path), options, column_families={TASKS: Options(raw_mode=True), PIECES: pieces})
        self.tasks = self.db.get_column_family_handle(TASKS)
        self.pieces = self.db.get_column_family_handle(PIECES)
        self._tasks = self.db.get_column_family(TASKS)
        self._pieces = self.db.get_column_family(PIECES)

    def close(self) -> None:
        """Flush and close the database; its lock goes with the last handle, so all are dropped."""
        self._tasks.close()
        self._pieces.close()
        self.db.close()
        del self.tasks, self.pieces, self._tasks, self._pieces, self.db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Batch]:
        """A batch of writes applied atomically when the block ends without an exception."""
        batch = Batch(self)
        yield batch
        self.db.write(batch.batch)

    def task(self, task_id: str) -> TaskRecord | None:
        """The record of `task_id`, if any."""
        raw = self._tasks.get(task_id.encode())
        return None if raw is None else _load(TaskRecord, raw, f"task {task_id}")

    def all_tasks(self) -> list[TaskRecord]:
        """Every task record."""
        return [_load(TaskRecord, raw, f"task {key!r}") for key, raw in self._tasks.items()]

    def piece(self, task_id: str, number: int) -> PieceRecord | None:
        """The record of piece `number` of `task_id`, if stored: one point lookup."""
        raw = self._pieces.get(piece_key(task_id, number))
        return None if raw is None else _load(PieceRecord, raw, f"piece {number} of task {task_id}")

    def pieces_of(self, task_id: str) -> list[PieceRecord]:
        """The stored pieces of `task_id` in number order: one prefix scan."""
        prefix = task_id.encode()
        read = ReadOptions()
        read.set_prefix_same_as_start(True)
        records = []
        for key, raw in self._pieces.items(from_key=prefix, read_opt=read):
            if not key.startswith(prefix + b"-"):
                break
            records.append(_load(PieceRecord, raw, f"piece {key!r}"))
        return sorted(records, key=lambda record: record.number)


def _load(cls: type, raw: bytes, what: str):
    try:
        return cls(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise Corrupt(f"{what}: unreadable metadata record: {exc}") from exc
