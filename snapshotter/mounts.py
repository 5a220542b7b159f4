"""The mounts containerd performs for a snapshot, as overlay.go builds them (pure).

Rules (containerd's overlayfs snapshotter, which containerd and runc expect):
- no lower directories: a bind mount of the snapshot's own directory, `rw,rbind` (`ro,rbind` for
  a view);
- an active snapshot over lower directories: `overlay` with `workdir=`, `upperdir=` and
  `lowerdir=nearest:…:farthest`;
- a view over one lower directory: a read-only bind of it; over several: `overlay` with only
  `lowerdir=` (read-only by construction).
The lower directories come resolved: for a lazyfly image they are the image's directory in the
fusefs mount instead of the directories of its layers.
"""

from collections.abc import Sequence
from pathlib import Path

from lazyfly.snapshotter.model import Kind, Mount


def snapshot_mounts(kind: Kind, upper: Path, work: Path, lowerdirs: Sequence[Path]) -> list[Mount]:
    """The mounts of a snapshot of `kind` whose own directories are `upper` and `work`."""
    if not lowerdirs:
        mode = "ro" if kind is Kind.VIEW else "rw"
        return [Mount("bind", str(upper), [mode, "rbind"])]
    lower = "lowerdir=" + ":".join(str(path) for path in lowerdirs)
    if kind is Kind.ACTIVE:
        return [Mount("overlay", "overlay", [f"workdir={work}", f"upperdir={upper}", lower])]
    if len(lowerdirs) == 1:
        return [Mount("bind", str(lowerdirs[0]), ["ro", "rbind"])]
    return [Mount("overlay", "overlay", [lower])]
