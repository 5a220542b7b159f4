"""The piece store: content and metadata together, with checksums (the façade the peer uses).

Rules:
- Rule 1: a piece is recorded only after its bytes are written and its checksum matched
  (`crc32c:` ours, `crc32:` from reference peers); a mismatch raises Corrupt and records nothing.
- Rule 2: a task is marked finished only when every piece is recorded and its content is synced,
  so a finished task survives a restart intact.
- Rule 3: reads of a piece check its stored checksum again: a disk that lies is caught here.
"""

import time
from pathlib import Path

from lazyfly.checksum import crc32c_digest, verify
from lazyfly.errors import Corrupt, NotFound
from lazyfly.p2p.storage.piece_content import PieceContent
from lazyfly.p2p.storage.piece_meta import PieceMeta, PieceRecord, TaskRecord
from lazyfly.p2p.task.pieces import piece, piece_count


class PieceStore:
    """Pieces of tasks under `root` (content/ and metadata/)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.content = PieceContent(root)
        self.meta = PieceMeta(root / "metadata")

    def close(self) -> None:
        """Close the metadata database."""
        self.meta.close()

    def register(self, task_id: str, url: str, content_length: int, piece_length: int) -> TaskRecord:
        """Record a task about to be downloaded (kept as it is if known)."""
        known = self.meta.task(task_id)
        if known is not None:
            return known
        now = time.time()
        record = TaskRecord(task_id, url, content_length, piece_length, False, now, now)
        with self.meta.transaction() as tx:
            tx.put_task(record)
        return record

    def write_piece(
        self,
        task_id: str,
        number: int,
        data: bytes | memoryview,
        digest: str | None = None,
        parent_id: str = "",
    ) -> PieceRecord:
        """Check `data` against `digest` (computed when None: back-to-source), store and record it."""
        task = self._task(task_id)
        expected = piece(number, task.content_length, task.piece_length)
        if len(data) != expected.length:
            raise Corrupt(f"task {task_id} piece {number}: {len(data)} bytes, expected {expected.length}")
        if digest is None:
            digest = crc32c_digest(data)
        else:
            verify(digest, data, f"task {task_id} piece {number}")
        self.content.write(task_id, expected.offset, data, task.content_length)
        record = PieceRecord(number, expected.offset, expected.length, digest, parent_id)
        with self.meta.transaction() as tx:
            tx.put_piece(task_id, record)
        return record

    def read_piece(self, task_id: str, number: int) -> tuple[PieceRecord, bytes]:
        """A stored piece's record and bytes, checked again (Rule 3)."""
        record = self.meta.piece(task_id, number)
        if record is None:
            raise NotFound(f"task {task_id} has no piece {number}")
        data = self.content.read(task_id, record.offset, record.length)
        verify(record.digest, data, f"stored task {task_id} piece {number}")
        return record, data

    def finish(self, task_id: str) -> TaskRecord:
        """Mark the task finished once every piece is stored (Rule 2); a finished task stays as it is."""
        task = self._task(task_id)
        if task.finished:
            return task
        have = {record.number for record in self.meta.pieces_of(task_id)}
        missing = [n for n in range(piece_count(task.content_length, task.piece_length)) if n not in have]
        if missing:
            raise NotFound(f"task {task_id}: pieces {missing[:10]} are missing")
        if task.content_length == 0:
            self.content.write(task_id, 0, b"", 0)
        self.content.sync(task_id)
        task.finished, task.updated_at = True, time.time()
        with self.meta.transaction() as tx:
            tx.put_task(task)
        return task

    def touch(self, task_id: str) -> None:
        """Note that a task was used now (the disk GC evicts the least recently used first)."""
        task = self.meta.task(task_id)
        if task is not None:
            task.updated_at = time.time()
            with self.meta.transaction() as tx:
                tx.put_task(task)

    def delete(self, task_id: str) -> int:
        """Forget a task and delete its content; return the bytes freed."""
        with self.meta.transaction() as tx:
            tx.delete_task(task_id)
        return self.content.delete(task_id)

    def _task(self, task_id: str) -> TaskRecord:
        task = self.meta.task(task_id)
        if task is None:
            raise NotFound(f"task {task_id} is not registered")
        return task
