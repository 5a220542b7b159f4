import os

import pytest

from lazyfly.errors import FailedPrecondition, NotFound
from lazyfly.snapshotter import metastore as ms
from lazyfly.snapshotter.labels import LAZYFLY_BLOB, LAZYFLY_IMAGE
from lazyfly.snapshotter.model import Info, Kind, Mount
from lazyfly.snapshotter.snapshotter import Snapshotter


@pytest.fixture
def images(tmp_path):
    return tmp_path / "mnt"


@pytest.fixture
def snapshotter(tmp_path, images):
    store = ms.MetaStore(tmp_path / "metadata.db")
    yield Snapshotter(tmp_path / "root", store, lambda image: images / image)
    store.close()


def directories(snapshotter):
    return sorted(entry.name for entry in snapshotter.snapshots_dir.iterdir())


def commit_layer(snapshotter, key, name, parent="", files=None):
    plan = snapshotter.prepare(key, parent, {})
    upper = snapshotter.snapshots_dir / directories(snapshotter)[-1] / "fs"
    assert plan.mounts[-1].options[-1].startswith(("lowerdir", "rbind"))
    for name_, data in (files or {}).items():
        (upper / name_).write_bytes(data)
    snapshotter.commit(name, key, {})


def test_prepare_builds_the_directory_and_commit_records_its_usage(snapshotter):
    plan = snapshotter.prepare("k1", "", {"x": "1"})
    (snapshot_dir,) = directories(snapshotter)
    fs = snapshotter.snapshots_dir / snapshot_dir / "fs"
    assert plan.mounts == [Mount("bind", str(fs), ["rw", "rbind"])]
    assert snapshotter.mounts("k1") == plan
    (fs / "data").write_bytes(os.urandom(1 << 20))
    assert snapshotter.usage("k1").size >= 1 << 20
    snapshotter.commit("base", "k1", {})
    assert snapshotter.stat("base").kind is Kind.COMMITTED
    assert snapshotter.usage("base").size >= 1 << 20
    with pytest.raises(NotFound):
        snapshotter.stat("k1")


def test_a_child_is_an_overlay_over_its_parents_nearest_first(snapshotter):
    commit_layer(snapshotter, "k1", "l1")
    commit_layer(snapshotter, "k2", "l2", parent="l1")
    (mount,) = snapshotter.prepare("k3", "l2", {}).mounts
    first, second, third = (snapshotter.snapshots_dir / name for name in ["1", "2", "3"])
    assert mount.type == "overlay"
    assert mount.options == [
        f"workdir={third / 'work'}",
        f"upperdir={third / 'fs'}",
        f"lowerdir={second / 'fs'}:{first / 'fs'}",
    ]


def test_a_failed_prepare_leaves_no_directory_and_no_record(snapshotter):
    snapshotter.prepare("k1", "", {})
    before = directories(snapshotter)
    with pytest.raises(NotFound):
        snapshotter.prepare("k2", "no-such-parent", {})
    with pytest.raises(Exception, match="already exists"):
        snapshotter.prepare("k1", "", {})
    assert directories(snapshotter) == before
    assert [info.name for info in snapshotter.walk([])] == ["k1"]


def test_remove_deletes_the_directory_but_not_under_a_child(snapshotter):
    commit_layer(snapshotter, "k1", "base")
    snapshotter.prepare("k2", "base", {})
    with pytest.raises(FailedPrecondition):
        snapshotter.remove("base")
    snapshotter.remove("k2")
    snapshotter.remove("base")
    assert directories(snapshotter) == []


def test_cleanup_deletes_what_a_crash_left_and_keeps_live_snapshots(snapshotter):
    snapshotter.prepare("k1", "", {})
    for leftover in ["new-abc", "rm-7", "42"]:
        (snapshotter.snapshots_dir / leftover / "fs").mkdir(parents=True)
    removed = snapshotter.cleanup()
    assert sorted(path.name for path in removed) == ["42", "new-abc", "rm-7"]
    assert directories(snapshotter) == ["1"]


def test_a_container_over_a_lazy_image_reads_the_image_directory_only(snapshotter, images):
    (images / "img").mkdir(parents=True)
    os.chown(images / "img", 1234, 5678)
    snapshotter.commit_remote("sha256:blob", "", {LAZYFLY_BLOB: "true"})
    snapshotter.commit_remote("sha256:root", "sha256:blob", {LAZYFLY_IMAGE: "img"})
    assert snapshotter.image_below("sha256:root") == "img"
    plan = snapshotter.prepare("container", "sha256:root", {})
    assert plan.image == "img"
    (mount,) = plan.mounts
    assert mount.options[-1] == f"lowerdir={images / 'img'}"
    upper = snapshotter.snapshots_dir / "3" / "fs"
    assert (upper.stat().st_uid, upper.stat().st_gid) == (1234, 5678)
    assert snapshotter.view("v", "sha256:root", {}).mounts == [
        Mount("bind", str(images / "img"), ["ro", "rbind"])
    ]
    assert snapshotter.images_in_use() == {"img"}


def test_update_changes_only_labels(snapshotter):
    snapshotter.prepare("k", "", {"a": "1"})
    info = snapshotter.update(Info("k", labels={"b": "2"}), ["labels.b"])
    assert info.labels == {"a": "1", "b": "2"}
