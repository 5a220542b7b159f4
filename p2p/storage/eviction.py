"""Which tasks the disk GC evicts (pure): least recently used first, never one in use.

Rules:
- Rule 1: nothing is evicted while usage is under `high_percent` of the capacity; above it, tasks
  go until usage is at or under `low_percent`.
- Rule 2: a task in use (downloading, or being read) is never evicted; finished tasks go first,
  least recently used (updated) first; an unfinished task only when it was left idle for longer
  than STALE_AFTER seconds (a download that died), never a recent one.
"""

from dataclasses import dataclass

STALE_AFTER = 3600.0


@dataclass(frozen=True)
class StoredTask:
    """What the GC needs to know of a stored task."""

    task_id: str
    size: int  # bytes on disk
    updated_at: float
    finished: bool
    in_use: bool


def tasks_to_evict(
    tasks: list[StoredTask], used: int, capacity: int, high_percent: float, low_percent: float, now: float
) -> list[str]:
    """The ids of the tasks to delete, in order (Rules 1, 2)."""
    if capacity <= 0 or used * 100 < capacity * high_percent:
        return []
    target = capacity * low_percent / 100
    candidates = [t for t in tasks if not t.in_use and (t.finished or now - t.updated_at > STALE_AFTER)]
    candidates.sort(key=lambda t: (not t.finished, t.updated_at))
    chosen = []
    for task in candidates:
        if used <= target:
            break
        chosen.append(task.task_id)
        used -= task.size
    return chosen
