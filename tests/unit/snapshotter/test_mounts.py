from pathlib import Path

from lazyfly.snapshotter.model import Kind, Mount
from lazyfly.snapshotter.mounts import snapshot_mounts

UPPER, WORK = Path("/s/1/fs"), Path("/s/1/work")


def test_a_snapshot_without_parents_is_a_bind_of_its_own_directory():
    assert snapshot_mounts(Kind.ACTIVE, UPPER, WORK, []) == [Mount("bind", "/s/1/fs", ["rw", "rbind"])]
    assert snapshot_mounts(Kind.VIEW, UPPER, WORK, []) == [Mount("bind", "/s/1/fs", ["ro", "rbind"])]


def test_an_active_snapshot_over_parents_is_an_overlay_nearest_lowerdir_first():
    (mount,) = snapshot_mounts(Kind.ACTIVE, UPPER, WORK, [Path("/s/3/fs"), Path("/s/2/fs")])
    assert mount == Mount(
        "overlay", "overlay", ["workdir=/s/1/work", "upperdir=/s/1/fs", "lowerdir=/s/3/fs:/s/2/fs"]
    )


def test_a_view_of_one_parent_is_a_read_only_bind_and_of_several_a_lower_only_overlay():
    assert snapshot_mounts(Kind.VIEW, UPPER, WORK, [Path("/mnt/img")]) == [
        Mount("bind", "/mnt/img", ["ro", "rbind"])
    ]
    assert snapshot_mounts(Kind.VIEW, UPPER, WORK, [Path("/a"), Path("/b")]) == [
        Mount("overlay", "overlay", ["lowerdir=/a:/b"])
    ]
