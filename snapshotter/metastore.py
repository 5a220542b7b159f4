"""The snapshotter's metadata: snapshots and served images in SQLite, and nothing else.

Like containerd's storage/metastore.go: `MetaStore.transaction(writable)` yields a transaction, and
the functions below run inside one. No filesystem work happens here (STYLE 5): the snapshotter
builds a directory in a temporary place, records it in a write transaction, renames it into place
before that transaction commits, and deletes directories only after a removal has committed.

Rules:
- Rule 1 (identity): a snapshot has an integer id that is never reused (AUTOINCREMENT); its
  directory is named by the id, never by the key, so renaming on commit costs nothing.
- Rule 2 (tree): `parent_id` points at a committed snapshot; a snapshot with children cannot be
  removed (FailedPrecondition); an active snapshot keeps its id when committed under a name.
- Rule 3 (errors): a missing key is NotFound, a taken key or name AlreadyExists, a parent that is
  not committed or an update of anything but labels InvalidArgument, committing a snapshot that is
  not active FailedPrecondition — each naming the key.
- Rule 4 (images): the fusefs images the snapshotter added (id → add request as JSON) are kept
  here too, so that a restart can add them again.
"""

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lazyfly.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from lazyfly.snapshotter.model import Info, Kind, Usage

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    parent_id INTEGER REFERENCES snapshots(id),
    kind INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    labels TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    request TEXT NOT NULL
);
"""
_COLUMNS = "s.id, s.name, p.name, s.kind, s.created_ns, s.updated_ns, s.labels, s.size, s.inodes"
_SELECT = f"SELECT {_COLUMNS} FROM snapshots s LEFT JOIN snapshots p ON s.parent_id = p.id"


@dataclass
class Ancestor:
    """A snapshot below another one: its id and labels (to find lazyfly images)."""

    id: int
    labels: dict[str, str]


@dataclass
class Snapshot:
    """What the directory work needs of a snapshot: its id, kind and ancestors, nearest first."""

    id: int
    kind: Kind
    ancestors: list[Ancestor]


class Transaction:
    """One SQLite transaction; only the functions of this module use it."""

    def __init__(self, connection: sqlite3.Connection, writable: bool) -> None:
        self.connection = connection
        self.writable = writable

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> sqlite3.Cursor:
        """Run one statement."""
        return self.connection.execute(sql, parameters)


class MetaStore:
    """The database file; one connection, one transaction at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute("PRAGMA foreign_keys=ON")
        self._connection.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._connection.close()

    @contextlib.contextmanager
    def transaction(self, writable: bool) -> Iterator[Transaction]:
        """A transaction that commits when the block ends and rolls back if it raises."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE" if writable else "BEGIN")
            try:
                yield Transaction(self._connection, writable)
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")


def create_snapshot(
    tx: Transaction, kind: Kind, key: str, parent: str, labels: dict[str, str], now_ns: int
) -> Snapshot:
    """Record a new snapshot `key` of `kind` over the committed snapshot `parent` ("" for none)."""
    if not key:
        raise InvalidArgument("snapshot key is empty")
    parent_id = None
    if parent:
        row = tx.execute("SELECT id, kind FROM snapshots WHERE name = ?", (parent,)).fetchone()
        if row is None:
            raise NotFound(f"parent snapshot {parent!r} of {key!r} does not exist")
        if row[1] != Kind.COMMITTED:
            raise InvalidArgument(f"parent snapshot {parent!r} of {key!r} is not committed")
        parent_id = row[0]
    try:
        cursor = tx.execute(
            "INSERT INTO snapshots (name, parent_id, kind, created_ns, updated_ns, labels)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, parent_id, int(kind), now_ns, now_ns, json.dumps(labels, sort_keys=True)),
        )
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"snapshot {key!r} already exists") from None
    new_id = cursor.lastrowid
    assert new_id is not None
    return Snapshot(new_id, kind, _ancestors(tx, parent_id))


def get_snapshot(tx: Transaction, key: str) -> Snapshot:
    """The id, kind and ancestors of snapshot `key`."""
    row = tx.execute("SELECT id, kind, parent_id FROM snapshots WHERE name = ?", (key,)).fetchone()
    if row is None:
        raise NotFound(f"snapshot {key!r} does not exist")
    return Snapshot(row[0], Kind(row[1]), _ancestors(tx, row[2]))


def get_info(tx: Transaction, key: str) -> tuple[int, Info, Usage]:
    """The id, info and stored usage of snapshot `key`."""
    row = tx.execute(f"{_SELECT} WHERE s.name = ?", (key,)).fetchone()
    if row is None:
        raise NotFound(f"snapshot {key!r} does not exist")
    return row[0], _info(row), Usage(row[7], row[8])


def exists(tx: Transaction, key: str) -> bool:
    """Whether a snapshot is named `key`."""
    return tx.execute("SELECT 1 FROM snapshots WHERE name = ?", (key,)).fetchone() is not None


def walk_info(tx: Transaction) -> list[Info]:
    """Every snapshot's info, oldest first."""
    return [_info(row) for row in tx.execute(f"{_SELECT} ORDER BY s.id")]


def update_info(tx: Transaction, info: Info, field_paths: Sequence[str], now_ns: int) -> Info:
    """Change the labels of `info.name`: all of them, or only the `labels.<key>` paths given.

    A `labels.<key>` path whose key is missing from `info.labels` deletes that label.
    """
    _, current, _ = get_info(tx, info.name)
    labels = dict(current.labels)
    if not field_paths:
        labels = dict(info.labels)
    for path in field_paths:
        if path == "labels":
            labels = dict(info.labels)
        elif path.startswith("labels."):
            key = path.removeprefix("labels.")
            if key in info.labels:
                labels[key] = info.labels[key]
            else:
                labels.pop(key, None)
        else:
            raise InvalidArgument(f"cannot update field {path!r} of snapshot {info.name!r}")
    tx.execute(
        "UPDATE snapshots SET labels = ?, updated_ns = ? WHERE name = ?",
        (json.dumps(labels, sort_keys=True), now_ns, info.name),
    )
    return get_info(tx, info.name)[1]


def commit_active(
    tx: Transaction, key: str, name: str, usage: Usage, labels: dict[str, str], now_ns: int
) -> int:
    """Turn the active snapshot `key` into the committed snapshot `name`; return its id."""
    row = tx.execute("SELECT id, kind FROM snapshots WHERE name = ?", (key,)).fetchone()
    if row is None:
        raise NotFound(f"snapshot {key!r} does not exist")
    if row[1] != Kind.ACTIVE:
        raise FailedPrecondition(f"snapshot {key!r} is {Kind(row[1]).title}, not Active: cannot commit")
    if exists(tx, name):
        raise AlreadyExists(f"snapshot {name!r} already exists")
    tx.execute(
        "UPDATE snapshots SET name = ?, kind = ?, created_ns = ?, updated_ns = ?, labels = ?,"
        " size = ?, inodes = ? WHERE id = ?",
        (
            name,
            int(Kind.COMMITTED),
            now_ns,
            now_ns,
            json.dumps(labels, sort_keys=True),
            usage.size,
            usage.inodes,
            row[0],
        ),
    )
    return int(row[0])


def remove(tx: Transaction, key: str) -> tuple[int, Kind]:
    """Delete snapshot `key` if nothing is built on it; return its id and kind."""
    row = tx.execute("SELECT id, kind FROM snapshots WHERE name = ?", (key,)).fetchone()
    if row is None:
        raise NotFound(f"snapshot {key!r} does not exist")
    child = tx.execute("SELECT name FROM snapshots WHERE parent_id = ? LIMIT 1", (row[0],)).fetchone()
    if child is not None:
        raise FailedPrecondition(f"cannot remove snapshot {key!r}: snapshot {child[0]!r} is built on it")
    tx.execute("DELETE FROM snapshots WHERE id = ?", (row[0],))
    return int(row[0]), Kind(row[1])


def snapshot_ids(tx: Transaction) -> set[int]:
    """The ids of every snapshot (the directories to keep)."""
    return {row[0] for row in tx.execute("SELECT id FROM snapshots")}


def labels_in_use(tx: Transaction, key: str) -> set[str]:
    """The values of label `key` over every snapshot."""
    values = set()
    for (labels,) in tx.execute("SELECT labels FROM snapshots"):
        value = json.loads(labels).get(key)
        if value:
            values.add(value)
    return values


def put_image(tx: Transaction, image_id: str, request: dict[str, object]) -> None:
    """Remember that fusefs image `image_id` was added with `request`."""
    tx.execute(
        "INSERT OR REPLACE INTO images (id, request) VALUES (?, ?)",
        (image_id, json.dumps(request, sort_keys=True)),
    )


def images(tx: Transaction) -> dict[str, dict[str, object]]:
    """Every remembered fusefs image: id → its add request."""
    return {row[0]: json.loads(row[1]) for row in tx.execute("SELECT id, request FROM images ORDER BY id")}


def remove_image(tx: Transaction, image_id: str) -> None:
    """Forget fusefs image `image_id`."""
    tx.execute("DELETE FROM images WHERE id = ?", (image_id,))


def _ancestors(tx: Transaction, parent_id: int | None) -> list[Ancestor]:
    ancestors = []
    while parent_id is not None:
        row = tx.execute("SELECT id, parent_id, labels FROM snapshots WHERE id = ?", (parent_id,)).fetchone()
        ancestors.append(Ancestor(row[0], json.loads(row[2])))
        parent_id = row[1]
    return ancestors


def _info(row: Sequence[object]) -> Info:
    return Info(
        name=str(row[1]),
        parent=str(row[2] or ""),
        kind=Kind(row[3]),
        created_ns=int(row[4]),  # type: ignore[call-overload]
        updated_ns=int(row[5]),  # type: ignore[call-overload]
        labels=json.loads(str(row[6])),
    )
