"""The snapshotter conformance suite: containerd's snapshots v1 behaviour, checked over gRPC.

It runs against lazyfly's snapshotter and against containerd's own overlayfs snapshotter (through
containerd's API), so that every rule here is one containerd itself keeps. Use: subclass
`SnapshotterSuite` and give it a fixture `snapshots` returning a SnapshotsClient; every test names
its snapshots with its own prefix, so one daemon can serve the whole module. Mounts are performed
for real, as containerd performs them, and always undone.
"""

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fixtures.snapshotter import SnapshotsClient

KIND_ACTIVE, KIND_COMMITTED, KIND_VIEW = 2, 3, 1


@contextlib.contextmanager
def mounted(mounts: list, target: Path) -> Iterator[Path]:
    """Perform the mounts on `target` (as containerd's mount package does) and undo them."""
    target.mkdir(parents=True, exist_ok=True)
    done = 0
    try:
        for mount in mounts:
            argv = ["mount", "-o", ",".join(mount.options), mount.source, str(target)]
            if mount.type != "bind":
                argv[1:1] = ["-t", mount.type]
            subprocess.run(argv, check=True, capture_output=True)
            done += 1
        yield target
    finally:
        for _ in range(done):
            subprocess.run(["umount", str(target)], check=True)


def own_labels(info) -> dict[str, str]:
    """The labels a test set (containerd adds its own under containerd.io/)."""
    return {k: v for k, v in info.labels.items() if not k.startswith("containerd.io/")}


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


class SnapshotterSuite:
    @pytest.fixture
    def names(self):
        prefix = uuid.uuid4().hex[:8]
        return lambda name: f"{prefix}-{name}"

    def commit_layer(self, snapshots: SnapshotsClient, tmp_path: Path, key, name, parent="", change=None):
        with mounted(snapshots.prepare(key, parent), tmp_path / key) as root:
            if change:
                change(root)
        snapshots.commit(name, key)

    def test_layers_stack_like_an_unpacked_image(self, snapshots, names, tmp_path):
        def base(root):
            (root / "etc").mkdir()
            (root / "etc" / "gone").write_text("deleted above")
            (root / "etc" / "changed").write_text("v1")

        def upper(root):
            (root / "etc" / "gone").unlink()
            (root / "etc" / "changed").write_text("v2")
            (root / "new").write_text("added")

        self.commit_layer(snapshots, tmp_path, names("k1"), names("l1"), change=base)
        self.commit_layer(snapshots, tmp_path, names("k2"), names("l2"), names("l1"), change=upper)
        with mounted(snapshots.view(names("v"), names("l2")), tmp_path / "view") as root:
            assert sorted(p.name for p in root.iterdir()) == ["etc", "new"]
            assert not (root / "etc" / "gone").exists()
            assert (root / "etc" / "changed").read_text() == "v2"
        with mounted(snapshots.view(names("v1"), names("l1")), tmp_path / "view1") as root:
            assert (root / "etc" / "gone").read_text() == "deleted above"
        info = snapshots.stat(names("l2"))
        assert (info.name, info.parent, info.kind) == (names("l2"), names("l1"), KIND_COMMITTED)

    def test_a_container_writes_to_its_own_upper_layer(self, snapshots, names, tmp_path):
        self.commit_layer(
            snapshots, tmp_path, names("k1"), names("l1"), change=lambda r: (r / "f").write_text("x")
        )
        mounts = snapshots.prepare(names("c"), names("l1"))
        assert snapshots.mounts(names("c")) == mounts
        with mounted(mounts, tmp_path / "c") as root:
            (root / "f").write_text("container")
        with mounted(snapshots.view(names("v"), names("l1")), tmp_path / "v") as root:
            assert (root / "f").read_text() == "x"
        assert snapshots.stat(names("c")).kind == KIND_ACTIVE

    def test_commit_moves_the_key_to_the_name(self, snapshots, names, tmp_path):
        self.commit_layer(snapshots, tmp_path, names("k"), names("l"))
        assert code_of(lambda: snapshots.stat(names("k"))) == grpc.StatusCode.NOT_FOUND
        assert snapshots.stat(names("l")).kind == KIND_COMMITTED

    def test_errors_carry_containerds_codes(self, snapshots, names, tmp_path):
        self.commit_layer(snapshots, tmp_path, names("k"), names("l"))
        snapshots.prepare(names("c"), names("l"))
        snapshots.view(names("v"), names("l"))
        assert code_of(lambda: snapshots.prepare(names("c"), names("l"))) == grpc.StatusCode.ALREADY_EXISTS
        assert code_of(lambda: snapshots.prepare(names("x"), names("missing"))) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: snapshots.stat(names("missing"))) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: snapshots.mounts(names("missing"))) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: snapshots.remove(names("missing"))) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: snapshots.remove(names("l"))) == grpc.StatusCode.FAILED_PRECONDITION
        assert code_of(lambda: snapshots.commit(names("l"), names("c"))) == grpc.StatusCode.ALREADY_EXISTS
        assert code_of(lambda: snapshots.commit(names("n"), names("missing"))) == grpc.StatusCode.NOT_FOUND

    def test_remove_children_first_then_the_parent(self, snapshots, names, tmp_path):
        self.commit_layer(snapshots, tmp_path, names("k"), names("l"))
        snapshots.prepare(names("c"), names("l"))
        snapshots.remove(names("c"))
        snapshots.remove(names("l"))
        assert snapshots.list(f"name=={names('l')}", f"name=={names('c')}") == []

    def test_update_sets_and_deletes_labels(self, snapshots, names):
        snapshots.prepare(names("k"), labels={"a": "1", "b": "2"})
        info = snapshots.update(names("k"), {"a": "9", "c": "3"}, ["labels.a", "labels.b", "labels.c"])
        assert own_labels(info) == {"a": "9", "c": "3"}
        assert own_labels(snapshots.stat(names("k"))) == {"a": "9", "c": "3"}

    def test_list_filters_by_name_parent_kind_and_labels(self, snapshots, names, tmp_path):
        self.commit_layer(snapshots, tmp_path, names("k"), names("l"))
        snapshots.prepare(names("c1"), names("l"), labels={"role": "web"})
        snapshots.prepare(names("c2"), names("l"), labels={"role": "db"})

        def listed(*filters):
            return sorted(info.name for info in snapshots.list(*filters) if info.name.startswith(names("")))

        assert listed() == [names("c1"), names("c2"), names("l")]
        assert listed(f'parent=="{names("l")}"') == [names("c1"), names("c2")]
        assert listed(f"parent=={names('l')},labels.role==db") == [names("c2")]
        assert listed('labels."role"==web', "kind==committed") == [names("c1"), names("l")]
        assert listed("labels.role~=/^w/") == [names("c1")]

    def test_usage_counts_the_files_of_a_snapshot(self, snapshots, names, tmp_path):
        with mounted(snapshots.prepare(names("k")), tmp_path / "k") as root:
            (root / "data").write_bytes(b"\x01" * (1 << 20))
        active = snapshots.usage(names("k"))
        assert active.size >= 1 << 20
        assert active.inodes >= 2
        snapshots.commit(names("l"), names("k"))
        assert snapshots.usage(names("l")).size >= 1 << 20
