from lazyfly.fusefs.recent_chunks import RecentChunks


def test_chunks_are_kept_and_dropped_by_key():
    recent = RecentChunks(100)
    recent.put((0, 0), b"a" * 10)
    recent.put((1, 0), b"b" * 20)
    assert recent.get((0, 0)) == b"a" * 10 and (1, 0) in recent and recent.bytes == 30
    recent.drop((0, 0))
    recent.drop((0, 0))  # dropping what is gone is fine
    assert recent.get((0, 0)) is None and recent.bytes == 20 and len(recent) == 1


def test_the_least_recently_used_go_when_the_budget_is_exceeded():
    recent = RecentChunks(100)
    for n in range(4):
        recent.put((0, n), bytes(30))
    assert (0, 0) not in recent and recent.bytes == 90
    recent.get((0, 1))  # used: now the most recent
    recent.put((0, 9), bytes(30))
    assert (0, 1) in recent and (0, 2) not in recent and recent.bytes == 90


def test_a_chunk_larger_than_the_budget_is_not_kept_and_replacing_counts_once():
    recent = RecentChunks(100)
    recent.put((0, 0), bytes(101))
    assert len(recent) == 0 and recent.bytes == 0
    recent.put((0, 0), bytes(40))
    recent.put((0, 0), memoryview(bytes(60)))
    assert len(recent) == 1 and recent.bytes == 60


def test_a_zero_budget_keeps_nothing():
    recent = RecentChunks(0)
    recent.put((0, 0), b"x")
    assert len(recent) == 0
