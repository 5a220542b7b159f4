"""Read a directory on disk into a layer tree, feeding each regular file to a content sink.

Rules: symlinks are never followed; files sharing (st_dev, st_ino) become one node (hard link);
names are kept as raw bytes; sockets are skipped with a warning since an image cannot carry them.
The directory is read as it is: `.wh.` names in it are ordinary files, not whiteouts.
"""

import logging
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lazyfly.builder.content_sink import ContentSink
from lazyfly.builder.errors import SourceError
from lazyfly.builder.tree import Node

log = logging.getLogger(__name__)
READ_AHEAD = 256 << 20


def read_directory(root: Path, sink: ContentSink) -> Node:
    """Return the tree of `root` with every regular file passed through `sink`."""
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise SourceError(f"cannot read source directory {root}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise SourceError(f"source {root} is not a directory")
    links: dict[tuple[int, int], Node] = {}
    top = _node_from_stat(os.fsencode(root), st)
    top.children = {}
    stack = [(os.fsencode(root), b"", top)]
    files: list[tuple[bytes, bytes, Node]] = []  # (path on disk, path in the image, node)
    while stack:
        path, image_path, parent = stack.pop()
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            raise SourceError(f"cannot list {os.fsdecode(path)}: {exc.strerror}") from exc
        for entry in entries:
            child_path = entry.path
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISSOCK(st.st_mode):
                log.warning("skipping socket %s: images cannot hold sockets", os.fsdecode(child_path))
                continue
            key = (st.st_dev, st.st_ino)
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1 and key in links:
                parent.children[entry.name] = links[key]
                continue
            node = _node_from_stat(child_path, st)
            parent.children[entry.name] = node
            child_image_path = image_path + b"/" + entry.name
            if stat.S_ISDIR(st.st_mode):
                node.children = {}
                stack.append((child_path, child_image_path, node))
            elif stat.S_ISREG(st.st_mode):
                files.append((child_path, child_image_path, node))
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                links[key] = node
    _feed_files(files, sink)
    return top


def _feed_files(files: list[tuple[bytes, bytes, Node]], sink: ContentSink) -> None:
    """Hand every file to the sink in walk order while a helper thread keeps the disk busy.

    The helper asks the kernel to read files ahead (POSIX_FADV_WILLNEED), at most READ_AHEAD
    bytes beyond what the sink has taken: many reads in flight at once, where one reader at a
    time would leave the disk idle between requests.
    """
    taken = threading.Condition()
    progress = {"taken": 0, "issued": 0, "stop": False}

    def read_ahead() -> None:
        for path, _, node in files:
            with taken:
                taken.wait_for(
                    lambda: progress["stop"] or progress["issued"] - progress["taken"] < READ_AHEAD
                )
                if progress["stop"]:
                    return
            _advise_willneed(path)
            progress["issued"] += node.size

    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as helper:
        helper.submit(read_ahead)
        try:
            for path, image_path, node in files:
                _feed_file(path, image_path, node, sink)
                with taken:
                    progress["taken"] += node.size
                    taken.notify()
        finally:
            with taken:
                progress["stop"] = True
                taken.notify()


def _advise_willneed(path: bytes) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return  # reading it for real reports the error
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def _node_from_stat(path: bytes, st: os.stat_result) -> Node:
    node = Node(
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
        blocks=st.st_blocks if stat.S_ISREG(st.st_mode) else 0,
        mtime_ns=st.st_mtime_ns,
        rdev=st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0,
        xattrs=_xattrs(path),
    )
    if stat.S_ISLNK(st.st_mode):
        node.target = os.readlink(path)
        node.size = len(node.target)
    return node


def _xattrs(path: bytes) -> dict[bytes, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        try:
            out[os.fsencode(name)] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            log.warning("cannot read xattr %s of %s: %s", name, os.fsdecode(path), exc.strerror)
    return out


def _feed_file(path: bytes, image_path: bytes, node: Node, sink: ContentSink) -> None:
    try:
        sink.add_path(node, path, node.size, image_path)
    except OSError as exc:
        raise SourceError(f"cannot read {os.fsdecode(path)}: {exc.strerror}") from exc
    except EOFError as exc:
        raise SourceError(f"{os.fsdecode(path)} shrank while being read: {exc}") from exc
