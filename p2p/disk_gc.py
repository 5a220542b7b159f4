"""The peer's disk GC: every interval, evict stored tasks as storage/eviction.py chooses.

Usage is the content the peer holds against `gc.quota` when a quota is set, else the file system
holding the data directory (what the reference client watches).
"""

import logging
import shutil
import time

import anyio

from lazyfly.p2p.config import GcSettings
from lazyfly.p2p.download.manager import TaskManager
from lazyfly.p2p.metrics import PeerMetrics
from lazyfly.p2p.storage.eviction import StoredTask, tasks_to_evict

log = logging.getLogger(__name__)


def stored_tasks(manager: TaskManager, in_use: set[str]) -> list[StoredTask]:
    """Every task on disk with its size (blocks held) and whether it is in use."""
    tasks = []
    for record in manager.store.meta.all_tasks():
        path = manager.store.content.path(record.task_id)
        size = path.stat().st_blocks * 512 if path.exists() else 0
        busy = record.task_id in in_use
        tasks.append(StoredTask(record.task_id, size, record.updated_at, record.finished, busy))
    return tasks


async def collect_once(manager: TaskManager, settings: GcSettings, metrics: PeerMetrics) -> int:
    """Evict what the rules choose now; return the bytes freed."""
    in_use = {task_id for task_id, progress in manager.tasks.items() if progress.in_use}
    tasks = await anyio.to_thread.run_sync(stored_tasks, manager, in_use)
    if settings.quota:
        used, capacity = sum(t.size for t in tasks), settings.quota
    else:
        usage = shutil.disk_usage(manager.store.content.root)
        used, capacity = usage.used, usage.total
    chosen = tasks_to_evict(tasks, used, capacity, settings.high_percent, settings.low_percent, time.time())
    freed = 0
    for task_id in chosen:
        progress = manager.tasks.get(task_id)
        if progress is not None and progress.in_use:
            continue  # taken up again while the sizes were read
        manager.forget(task_id)
        freed += manager.store.delete(task_id)
        log.info("disk GC: evicted task %s", task_id)
    metrics.evicted_bytes.inc(freed)
    return freed


async def collect_forever(manager: TaskManager, settings: GcSettings, metrics: PeerMetrics) -> None:
    """Run the GC every `settings.interval` seconds until cancelled."""
    while True:
        await anyio.sleep(settings.interval)
        await collect_once(manager, settings, metrics)
