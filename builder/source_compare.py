"""Compare a lazyfly image with the tree it was made from: every path, its metadata and content.

The source is read into a layer tree through the hashing sink (a directory, a tarball, or the
merged layers of an OCI image), so no source file is held in memory. Hard links are compared as
groups: the set of names that share an inode must be the same on both sides.
"""

import hashlib
import stat
from collections import defaultdict
from pathlib import Path

from lazyfly.builder.check import CheckReport
from lazyfly.builder.content_sink import HashingSink
from lazyfly.builder.dir_source import read_directory
from lazyfly.builder.file_reader import BlobFiles, file_content
from lazyfly.builder.image_source import LazyImage, open_local_image
from lazyfly.builder.tar_source import read_tar_file
from lazyfly.builder.tree import Node, merge, new_dir, walk
from lazyfly.errors import Corrupt
from lazyfly.format.layout import Inode
from lazyfly.oci.locate import ImageLocation
from lazyfly.oci.manifest import layer_compression

_REPORT_LIMIT = 200


def compare_with_source(image: LazyImage, source: Node, report: CheckReport) -> None:
    """Add to `report` every difference between `image` and the source tree `source`."""
    boot = image.bootstrap
    image_entries = dict(boot.walk())
    source_entries = dict(walk(source))
    for path in sorted(source_entries.keys() - image_entries.keys())[:_REPORT_LIMIT]:
        report.add(f"{_show(path)}: in the source, missing from the image")
    for path in sorted(image_entries.keys() - source_entries.keys())[:_REPORT_LIMIT]:
        report.add(f"{_show(path)}: in the image, not in the source")
    paths = [blob.digest for blob in boot.blobs()]
    blob_paths = [str(image.layout.blob_path(d)) for d in paths]
    with BlobFiles(blob_paths) as blobs:
        for path in sorted(source_entries.keys() & image_entries.keys()):
            node, inode = source_entries[path], image_entries[path]
            for problem in _differences(node, inode, image, blobs):
                report.add(f"{_show(path)}: {problem}")
            if stat.S_ISREG(inode.mode):
                report.files_compared += 1
    _compare_link_groups(image_entries, source_entries, report)


def _differences(node: Node, inode: Inode, image: LazyImage, blobs: BlobFiles) -> list[str]:
    out = []
    if stat.S_IFMT(node.mode) != stat.S_IFMT(inode.mode):
        return [
            f"type {stat.filemode(inode.mode)[0]} in the image, {stat.filemode(node.mode)[0]} in the source"
        ]
    pairs = [
        ("mode", oct(inode.mode), oct(node.mode)),
        ("uid", inode.uid, node.uid),
        ("gid", inode.gid, node.gid),
        ("mtime", inode.mtime_ns, node.mtime_ns),
        ("xattrs", image.bootstrap.xattrs(inode), node.xattrs),
    ]
    if stat.S_ISREG(node.mode):
        pairs.append(("size", inode.size, node.size))
    if stat.S_ISLNK(node.mode):
        pairs.append(("symlink target", image.bootstrap.readlink(inode), node.target))
    if stat.S_ISCHR(node.mode) or stat.S_ISBLK(node.mode):
        pairs.append(("device", inode.rdev, node.rdev))
    out += [
        f"{what} {mine!r} in the image, {theirs!r} in the source"
        for what, mine, theirs in pairs
        if mine != theirs
    ]
    if stat.S_ISREG(node.mode) and inode.size == node.size:
        h = hashlib.sha256()
        try:
            for data in file_content(blobs, inode, image.bootstrap.chunks(inode)):
                h.update(data)
        except Corrupt as exc:
            return [*out, f"content unreadable: {exc}"]
        if "sha256:" + h.hexdigest() != node.content_digest:
            out.append("content differs")
    return out


def _compare_link_groups(
    image_entries: dict[bytes, Inode], source_entries: dict[bytes, Node], report: CheckReport
) -> None:
    def groups(keyed: dict[bytes, int]) -> dict[bytes, frozenset[bytes]]:
        members: dict[int, set[bytes]] = defaultdict(set)
        for path, key in keyed.items():
            members[key].add(path)
        return {p: frozenset(members[k]) for p, k in keyed.items() if len(members[k]) > 1}

    common = image_entries.keys() & source_entries.keys()
    mine = groups({p: image_entries[p].ino for p in common if not stat.S_ISDIR(image_entries[p].mode)})
    theirs = groups({p: id(source_entries[p]) for p in common if not source_entries[p].is_dir})
    for path in sorted(mine.keys() | theirs.keys()):
        a, b = mine.get(path, frozenset()), theirs.get(path, frozenset())
        if a != b:
            shown_a, shown_b = sorted(map(_show, a)), sorted(map(_show, b))
            report.add(f"{_show(path)}: hard links {shown_a} in the image, {shown_b} in the source")


def _show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def read_source_tree(location: ImageLocation, *, plain_http: bool, platform: str) -> Node:
    """Read a directory, a tarball, or an image's merged layers into a tree with content hashes."""
    sink = HashingSink()
    if isinstance(location, Path) and location.is_dir() and not (location / "oci-layout").exists():
        return read_directory(location, sink)
    if isinstance(location, Path) and location.is_file():
        return read_tar_file(location, sink, whiteouts=False)
    with open_local_image(location, plain_http=plain_http, platform=platform) as image:
        merged = new_dir()
        for layer in image.manifest.layers:
            layer_compression(layer.media_type)
            tree = read_tar_file(image.layout.blob_path(layer.digest), sink, whiteouts=True)
            merged = merge(merged, tree)
        return merged
