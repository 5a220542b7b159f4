from lazyfly.fusefs.cache_gc import collect_cache

KEEP = "sha256:" + "a" * 64
DROP = "sha256:" + "b" * 64
SERVED = "sha256:" + "c" * 64
GONE = "sha256:" + "d" * 64


def _name(digest: str) -> str:
    return digest.replace(":", "-")


def test_only_the_cache_files_of_blobs_not_kept_are_deleted(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for digest in (KEEP, DROP):
        (blobs / f"{_name(digest)}.data").write_bytes(b"x" * 8192)
        (blobs / f"{_name(digest)}.map").write_bytes(b"m")
    (blobs / "notes.txt").write_text("not a cache file")
    result = collect_cache(tmp_path, {KEEP}, set())
    assert result.removed == [DROP]
    assert result.freed_bytes >= 8192
    assert sorted(p.name for p in blobs.iterdir()) == [
        "notes.txt",
        f"{_name(KEEP)}.data",
        f"{_name(KEEP)}.map",
    ]


def test_the_bootstraps_of_images_no_longer_served_and_dead_adds_leftovers_are_deleted(tmp_path):
    bootstraps = tmp_path / "bootstraps"
    bootstraps.mkdir()
    for digest in (SERVED, GONE):
        (bootstraps / _name(digest)).write_bytes(b"b" * 8192)
        (bootstraps / f"{_name(digest)}.manifest").write_bytes(b"{}")
    (bootstraps / ".incoming-k2j4x9").write_bytes(b"half" * 2048)
    (bootstraps / "README").write_text("not a bootstrap")
    result = collect_cache(tmp_path, set(), {SERVED})
    assert result.bootstraps == [GONE] and result.removed == []
    assert result.freed_bytes >= 2 * 8192
    assert sorted(p.name for p in bootstraps.iterdir()) == [
        "README",
        _name(SERVED),
        f"{_name(SERVED)}.manifest",
    ]


def test_a_missing_cache_directory_collects_nothing(tmp_path):
    result = collect_cache(tmp_path / "cache", set(), set())
    assert (result.removed, result.freed_bytes, result.bootstraps) == ([], 0, [])
