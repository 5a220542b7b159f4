import pytest

from lazyfly.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from lazyfly.snapshotter import metastore as ms
from lazyfly.snapshotter.model import Info, Kind, Usage


@pytest.fixture
def store(tmp_path):
    store = ms.MetaStore(tmp_path / "metadata.db")
    yield store
    store.close()


def create(store, kind, key, parent="", labels=None):
    with store.transaction(True) as tx:
        return ms.create_snapshot(tx, kind, key, parent, labels or {}, 1)


def commit(store, key, name, labels=None):
    with store.transaction(True) as tx:
        return ms.commit_active(tx, key, name, Usage(10, 2), labels or {}, 2)


def test_committing_keeps_the_id_and_moves_the_name(store):
    active = create(store, Kind.ACTIVE, "k1")
    assert commit(store, "k1", "base", {"a": "1"}) == active.id
    with store.transaction(False) as tx:
        snapshot_id, info, usage = ms.get_info(tx, "base")
        assert (snapshot_id, info.kind, info.labels, usage) == (
            active.id,
            Kind.COMMITTED,
            {"a": "1"},
            Usage(10, 2),
        )
        assert not ms.exists(tx, "k1")


def test_ids_are_never_reused(store):
    first = create(store, Kind.ACTIVE, "k1")
    with store.transaction(True) as tx:
        ms.remove(tx, "k1")
    assert create(store, Kind.ACTIVE, "k1").id > first.id


def test_ancestors_come_nearest_first_with_their_labels(store):
    create(store, Kind.ACTIVE, "k1")
    commit(store, "k1", "base", {"layer": "0"})
    create(store, Kind.ACTIVE, "k2", "base")
    commit(store, "k2", "top", {"layer": "1"})
    snapshot = create(store, Kind.VIEW, "v", "top")
    assert [a.labels["layer"] for a in snapshot.ancestors] == ["1", "0"]


def test_the_rules_of_the_tree_raise_named_errors(store):
    create(store, Kind.ACTIVE, "k1")
    with pytest.raises(AlreadyExists, match="'k1'"):
        create(store, Kind.ACTIVE, "k1")
    with pytest.raises(NotFound, match="'missing'"):
        create(store, Kind.ACTIVE, "k2", "missing")
    with pytest.raises(InvalidArgument, match="not committed"):
        create(store, Kind.ACTIVE, "k2", "k1")
    commit(store, "k1", "base")
    create(store, Kind.VIEW, "v", "base")
    with pytest.raises(FailedPrecondition, match="not Active"):
        commit(store, "v", "other")
    create(store, Kind.ACTIVE, "k3")
    with pytest.raises(AlreadyExists, match="'base'"):
        commit(store, "k3", "base")
    with store.transaction(True) as tx, pytest.raises(FailedPrecondition, match="'v' is built on it"):
        ms.remove(tx, "base")


def test_update_sets_and_deletes_labels_by_path_and_refuses_other_fields(store):
    create(store, Kind.ACTIVE, "k", labels={"a": "1", "b": "2"})
    with store.transaction(True) as tx:
        info = ms.update_info(tx, Info("k", labels={"a": "9", "c": "3"}), ["labels.a", "labels.b"], 5)
    assert info.labels == {"a": "9"}
    assert info.updated_ns == 5
    with store.transaction(True) as tx:
        assert ms.update_info(tx, Info("k", labels={"z": "1"}), [], 6).labels == {"z": "1"}
        with pytest.raises(InvalidArgument, match="'parent'"):
            ms.update_info(tx, Info("k"), ["parent"], 7)


def test_a_failed_transaction_leaves_nothing(store):
    with pytest.raises(RuntimeError), store.transaction(True) as tx:
        ms.create_snapshot(tx, Kind.ACTIVE, "k", "", {}, 1)
        raise RuntimeError("the directory rename failed")
    with store.transaction(False) as tx:
        assert ms.walk_info(tx) == []


def test_images_are_remembered_until_forgotten(tmp_path, store):
    with store.transaction(True) as tx:
        ms.put_image(tx, "img", {"id": "img", "reference": "r"})
    store.close()
    reopened = ms.MetaStore(tmp_path / "metadata.db")
    with reopened.transaction(True) as tx:
        assert ms.images(tx) == {"img": {"id": "img", "reference": "r"}}
        ms.remove_image(tx, "img")
        assert ms.images(tx) == {}
    reopened.close()
