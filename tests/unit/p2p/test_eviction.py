from lazyfly.p2p.storage.eviction import STALE_AFTER, StoredTask, tasks_to_evict

NOW = 100_000.0


def task(name: str, size: int, age: float, finished: bool = True, in_use: bool = False) -> StoredTask:
    return StoredTask(name, size, NOW - age, finished, in_use)


def test_nothing_is_evicted_under_the_high_mark():
    assert (
        tasks_to_evict([task("a", 70, 10)], used=79, capacity=100, high_percent=80, low_percent=60, now=NOW)
        == []
    )


def test_least_recently_used_finished_tasks_go_until_the_low_mark():
    tasks = [task("new", 30, 1), task("old", 30, 100), task("middle", 30, 50)]
    chosen = tasks_to_evict(tasks, used=90, capacity=100, high_percent=80, low_percent=60, now=NOW)
    assert chosen == ["old"]


def test_a_task_in_use_is_never_evicted():
    tasks = [task("busy", 90, 1000, in_use=True), task("idle", 5, 1)]
    assert tasks_to_evict(tasks, used=95, capacity=100, high_percent=80, low_percent=60, now=NOW) == ["idle"]


def test_an_unfinished_task_goes_only_when_stale_and_after_finished_ones():
    tasks = [
        task("recent-partial", 40, 10, finished=False),
        task("stale-partial", 40, STALE_AFTER + 1, finished=False),
        task("done", 10, 5),
    ]
    chosen = tasks_to_evict(tasks, used=90, capacity=100, high_percent=80, low_percent=40, now=NOW)
    assert chosen == ["done", "stale-partial"]
