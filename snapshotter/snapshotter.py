"""The snapshotter's directory work, beside its metadata store (containerd overlay.go's counterpart).

Each snapshot owns `ROOT/snapshots/<id>/` with `fs/` (its files: the upper directory of an active
snapshot, the content of a committed one) and `work/` (overlay's work directory). A lazyfly image
root's files live in the fusefs mount instead (`image_dir(image id)`), and its data-blob layers have
none: both are committed by `commit_remote` with an empty directory, for uniformity.

Rules:
- Rule 1 (build, then record): a new snapshot's directory is made under a temporary name, renamed
  to its id inside the write transaction that records it, and deleted if anything fails; a removed
  snapshot's directory is renamed to `rm-<id>` inside the removing transaction (renamed back if that
  fails) and deleted after it commits. Whatever a crash leaves is a directory whose id the store
  lacks, which `cleanup` deletes.
- Rule 2 (one writer): changes and cleanup take one lock, so cleanup never sees a directory that is
  still being built.
- Rule 3 (mounts): mounts.py decides their shape; this module resolves the lower directories,
  nearest first, replacing a lazyfly image's layers by the image's directory in the fusefs mount.
- Rule 4 (ownership): an active snapshot's upper directory gets the owner of its nearest lower
  directory, as containerd does, so that a non-root image's root stays writable for its user.
"""

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lazyfly.snapshotter import metastore as ms
from lazyfly.snapshotter.filters import matches_any, parse_filters
from lazyfly.snapshotter.labels import LAZYFLY_IMAGE, is_lazy_blob, lazy_image_of
from lazyfly.snapshotter.model import Info, Kind, Mount, Usage
from lazyfly.snapshotter.mounts import snapshot_mounts

log = logging.getLogger(__name__)


@dataclass
class MountPlan:
    """A snapshot's mounts, and the lazyfly image (if any) they read from."""

    mounts: list[Mount]
    image: str | None


class Snapshotter:
    """Snapshots under `root`, recorded in `store`; lazyfly images seen through `image_dir`."""

    def __init__(
        self,
        root: Path,
        store: ms.MetaStore,
        image_dir: Callable[[str], Path],
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.root = root
        self.store = store
        self.image_dir = image_dir
        self.clock = clock
        self.snapshots_dir = root / "snapshots"
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        self._writer = threading.Lock()

    # --- the ten calls ---------------------------------------------------------------------------

    def prepare(self, key: str, parent: str, labels: dict[str, str]) -> MountPlan:
        """Create the active snapshot `key` over `parent` and return its mounts."""
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str, labels: dict[str, str]) -> MountPlan:
        """Create the read-only view `key` of `parent` and return its mounts."""
        return self._create(Kind.VIEW, key, parent, labels)

    def mounts(self, key: str) -> MountPlan:
        """The mounts of the active or view snapshot `key` (the same Prepare returned)."""
        with self.store.transaction(False) as tx:
            snapshot = ms.get_snapshot(tx, key)
        return self._plan(snapshot)

    def commit(self, name: str, key: str, labels: dict[str, str]) -> None:
        """Commit the active snapshot `key` as `name`, recording its disk usage."""
        with self.store.transaction(False) as tx:
            snapshot = ms.get_snapshot(tx, key)
        usage = disk_usage(self._fs(snapshot.id))
        with self._writer, self.store.transaction(True) as tx:
            ms.commit_active(tx, key, name, usage, labels, self.clock())

    def commit_remote(self, name: str, parent: str, labels: dict[str, str]) -> None:
        """Record the committed snapshot `name` of a lazy layer: no files of its own."""
        self._create(Kind.COMMITTED, name, parent, labels)

    def remove(self, key: str) -> None:
        """Delete snapshot `key` and its directory; FailedPrecondition if something is built on it."""
        with self._writer:
            doomed: Path | None = None
            try:
                with self.store.transaction(True) as tx:
                    snapshot_id, _ = ms.remove(tx, key)
                    source = self.snapshots_dir / str(snapshot_id)
                    if source.exists():
                        doomed = self.snapshots_dir / f"rm-{snapshot_id}"
                        source.rename(doomed)
            except BaseException:
                if doomed is not None and doomed.exists():
                    doomed.rename(source)
                raise
            if doomed is not None:
                _delete_tree(doomed)

    def stat(self, key: str) -> Info:
        """The info of snapshot `key`."""
        with self.store.transaction(False) as tx:
            return ms.get_info(tx, key)[1]

    def update(self, info: Info, field_paths: Sequence[str]) -> Info:
        """Change the labels of snapshot `info.name` (see metastore.update_info)."""
        with self._writer, self.store.transaction(True) as tx:
            return ms.update_info(tx, info, field_paths, self.clock())

    def walk(self, filters: Sequence[str]) -> list[Info]:
        """Every snapshot that passes one of `filters` (containerd filter syntax)."""
        parsed = parse_filters(filters)
        with self.store.transaction(False) as tx:
            infos = ms.walk_info(tx)
        return [info for info in infos if matches_any(parsed, info)]

    def usage(self, key: str) -> Usage:
        """Disk use of snapshot `key`: measured now if active, as recorded at commit otherwise."""
        with self.store.transaction(False) as tx:
            snapshot_id, info, usage = ms.get_info(tx, key)
        if info.kind is Kind.ACTIVE:
            return disk_usage(self._fs(snapshot_id))
        return usage

    def cleanup(self) -> list[Path]:
        """Delete every snapshot directory whose id the store lacks; return what was deleted."""
        with self._writer:
            with self.store.transaction(False) as tx:
                keep = {str(snapshot_id) for snapshot_id in ms.snapshot_ids(tx)}
            removed = [entry for entry in self.snapshots_dir.iterdir() if entry.name not in keep]
            for entry in removed:
                log.info("cleanup: deleting %s", entry)
                _delete_tree(entry)
        return removed

    # --- lazyfly images --------------------------------------------------------------------------

    def image_below(self, name: str) -> str | None:
        """The lazyfly image that snapshot `name` or one of its ancestors is the root of."""
        if not name:
            return None
        with self.store.transaction(False) as tx:
            snapshot = ms.get_snapshot(tx, name)
            _, info, _ = ms.get_info(tx, name)
        for labels in [info.labels, *(ancestor.labels for ancestor in snapshot.ancestors)]:
            image = lazy_image_of(labels)
            if image:
                return image
        return None

    def images_in_use(self) -> set[str]:
        """The lazyfly images some snapshot is the root of."""
        with self.store.transaction(False) as tx:
            return ms.labels_in_use(tx, LAZYFLY_IMAGE)

    # --- directories -----------------------------------------------------------------------------

    def _create(self, kind: Kind, key: str, parent: str, labels: dict[str, str]) -> MountPlan:
        with self._writer:
            building = Path(tempfile.mkdtemp(dir=self.snapshots_dir, prefix="new-"))
            try:
                building.chmod(0o755)
                (building / "fs").mkdir(mode=0o755)
                if kind is Kind.ACTIVE:
                    (building / "work").mkdir(mode=0o711)
                with self.store.transaction(True) as tx:
                    snapshot = ms.create_snapshot(tx, kind, key, parent, labels, self.clock())
                    lowerdirs = self._lowerdirs(snapshot.ancestors)
                    plan = self._plan(snapshot, lowerdirs)
                    if kind is Kind.ACTIVE and lowerdirs:
                        owner = os.stat(lowerdirs[0])
                        os.lchown(building / "fs", owner.st_uid, owner.st_gid)
                    building.rename(self.snapshots_dir / str(snapshot.id))
            except BaseException:
                _delete_tree(building)
                raise
        return plan

    def _plan(self, snapshot: ms.Snapshot, lowerdirs: list[Path] | None = None) -> MountPlan:
        if lowerdirs is None:
            lowerdirs = self._lowerdirs(snapshot.ancestors)
        mounts = snapshot_mounts(
            snapshot.kind, self._fs(snapshot.id), self.snapshots_dir / str(snapshot.id) / "work", lowerdirs
        )
        images = (lazy_image_of(ancestor.labels) for ancestor in snapshot.ancestors)
        return MountPlan(mounts, next((image for image in images if image), None))

    def _lowerdirs(self, ancestors: Sequence[ms.Ancestor]) -> list[Path]:
        lowerdirs = []
        for ancestor in ancestors:
            image = lazy_image_of(ancestor.labels)
            if image:
                lowerdirs.append(self.image_dir(image))
                break
            if not is_lazy_blob(ancestor.labels):
                lowerdirs.append(self._fs(ancestor.id))
        return lowerdirs

    def _fs(self, snapshot_id: int) -> Path:
        return self.snapshots_dir / str(snapshot_id) / "fs"


def disk_usage(path: Path) -> Usage:
    """Bytes allocated and inodes used under `path`, each inode once (containerd's fs.DiskUsage)."""
    seen: set[tuple[int, int]] = set()
    size = 0
    for directory, dirnames, filenames in os.walk(path):
        # os.walk lists symlinks to directories among dirnames and never visits them
        links = [name for name in dirnames if os.path.islink(os.path.join(directory, name))]
        for entry in [directory, *(os.path.join(directory, name) for name in [*filenames, *links])]:
            try:
                st = os.lstat(entry)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_blocks * 512
    return Usage(size, len(seen))


def _delete_tree(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot delete %s: %s (cleanup will retry)", path, exc)
