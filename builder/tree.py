"""The in-memory file tree of one layer, and the merge of layers with OCI whiteouts.

Rules:
- a hard link is the same `Node` object under several names, so nlink is derived, never stored;
- a layer tree records whiteouts as WHITEOUT nodes and opaque directories with `opaque=True`;
  `merge` applies them the way overlayfs and containerd's applier do: an upper entry replaces the
  lower one, two directories merge (the upper's attributes win), a whiteout deletes the lower
  entry, an opaque directory hides everything below it in lower layers;
- names are bytes and never contain `/`, `.` or `..`.
"""

import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
WHITEOUT = 0  # mode of a whiteout node: deletes the lower entry of the same name


@dataclass(eq=False, slots=True)
class Node:
    """One inode of a layer. `chunks` holds what the content sink recorded for a regular file."""

    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    blocks: int = 0
    mtime_ns: int = 0
    rdev: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    target: bytes = b""
    children: dict[bytes, "Node"] | None = None
    opaque: bool = False
    chunks: list[Any] = field(default_factory=list)
    content_digest: str = ""

    @property
    def is_dir(self) -> bool:
        """True for a directory."""
        return stat.S_ISDIR(self.mode)

    @property
    def is_whiteout(self) -> bool:
        """True for a whiteout entry."""
        return self.mode == WHITEOUT


def new_dir(mode: int = 0o040755, mtime_ns: int = 0) -> Node:
    """Return an empty directory node."""
    return Node(mode=mode, mtime_ns=mtime_ns, children={})


def merge(lower: Node, upper: Node) -> Node:
    """Apply layer `upper` on top of the merged tree `lower` and return the result (in place)."""
    _merge_dir(lower, upper)
    return lower


def _merge_dir(lower: Node, upper: Node) -> None:
    assert lower.children is not None and upper.children is not None
    if upper.opaque:
        lower.children.clear()
    _copy_attrs(lower, upper)
    for name, node in upper.children.items():
        if node.is_whiteout:
            lower.children.pop(name, None)
            continue
        below = lower.children.get(name)
        if below is not None and below.is_dir and node.is_dir and not node.opaque:
            _merge_dir(below, node)
        elif node.is_dir:
            lower.children[name] = _strip_markers(node)
        else:
            lower.children[name] = node


def _strip_markers(node: Node) -> Node:
    """A directory that replaces a lower entry keeps no whiteouts: there is nothing below it."""
    assert node.children is not None
    for name in [n for n, child in node.children.items() if child.is_whiteout]:
        del node.children[name]
    node.opaque = False
    for child in node.children.values():
        if child.is_dir:
            _strip_markers(child)
    return node


def _copy_attrs(dst: Node, src: Node) -> None:
    dst.mode, dst.uid, dst.gid = src.mode, src.uid, src.gid
    dst.mtime_ns, dst.xattrs = src.mtime_ns, src.xattrs


def walk(root: Node, prefix: bytes = b"") -> Iterator[tuple[bytes, Node]]:
    """Yield (path, node) depth-first in sorted name order, the root as `/`."""
    yield prefix or b"/", root
    if root.children is None:
        return
    for name in sorted(root.children):
        child = root.children[name]
        if child.children is not None:
            yield from walk(child, prefix + b"/" + name)
        else:
            yield prefix + b"/" + name, child


def find(root: Node, path: bytes) -> Node | None:
    """Return the node at absolute `path`, or None."""
    node = root
    for part in (p for p in path.split(b"/") if p):
        if node.children is None or part not in node.children:
            return None
        node = node.children[part]
    return node
