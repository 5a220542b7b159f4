from lazyfly.fusefs.cache_gc import collect_cache

KEEP = "sha256:" + "a" * 64
DROP = "sha256:" + "b" * 64


def test_only_the_cache_files_of_blobs_not_kept_are_deleted(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for digest in (KEEP, DROP):
        name = digest.replace(":", "-")
        (blobs / f"{name}.data").write_bytes(b"x" * 8192)
        (blobs / f"{name}.map").write_bytes(b"m")
    (blobs / "notes.txt").write_text("not a cache file")
    result = collect_cache(blobs, {KEEP})
    assert result.removed == [DROP]
    assert result.freed_bytes >= 8192
    assert sorted(p.name for p in blobs.iterdir()) == [
        "notes.txt",
        f"{KEEP.replace(':', '-')}.data",
        f"{KEEP.replace(':', '-')}.map",
    ]


def test_a_missing_cache_directory_collects_nothing(tmp_path):
    result = collect_cache(tmp_path / "blobs", set())
    assert (result.removed, result.freed_bytes) == ([], 0)
