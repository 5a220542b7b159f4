"""Task content: one sparse file per task, `content/tasks/<id[0:3]>/<id>`, pieces at their offsets.

Rules: a task file is created at its full length (holes until pieces land) and written with pwrite;
`sync` makes a finished task durable before it is recorded finished; reads never go past what the
caller asks (the piece store checks which pieces exist).
"""

import os
from pathlib import Path


class PieceContent:
    """The content files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, task_id: str) -> Path:
        """The content file of `task_id`."""
        return self.root / "content" / "tasks" / task_id[:3] / task_id

    def write(self, task_id: str, offset: int, data: bytes | memoryview, content_length: int) -> None:
        """Write `data` at `offset` of the task's file (made at `content_length` if missing)."""
        path = self.path(task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size != content_length:
                os.ftruncate(fd, content_length)
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        finally:
            os.close(fd)

    def read(self, task_id: str, offset: int, length: int) -> bytes:
        """`length` bytes of the task's file from `offset`."""
        with open(self.path(task_id), "rb") as f:
            return os.pread(f.fileno(), length, offset)

    def sync(self, task_id: str) -> None:
        """Make the task's content durable."""
        fd = os.open(self.path(task_id), os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def delete(self, task_id: str) -> int:
        """Delete the task's file; return the bytes it held on disk."""
        path = self.path(task_id)
        try:
            freed = path.stat().st_blocks * 512
            path.unlink()
        except FileNotFoundError:
            return 0
        return freed
