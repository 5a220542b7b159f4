"""Read a tar stream (plain, gzip or zstd) into a layer tree, feeding file bytes to a sink.

One sequential pass: the stream is never seeked, so a layer is read straight from its compressed
blob. Rules: entries with an absolute path or a `..` component, entries that repeat an earlier
one, and hard links to entries not seen before are refused with UnsafeTarEntry naming the entry;
a damaged stream raises BrokenLayer. With `whiteouts=True` (image layers), `.wh.NAME` deletes NAME
from lower layers and `.wh..wh..opq` makes its directory opaque.
"""

import gzip
import os
import stat
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

import zstandard

from lazyfly.builder.content_sink import ContentSink
from lazyfly.builder.errors import BrokenLayer, SourceError, UnsafeTarEntry
from lazyfly.builder.tree import OPAQUE_MARKER, WHITEOUT, WHITEOUT_PREFIX, Node, new_dir

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_TYPE_BITS = {
    tarfile.REGTYPE: stat.S_IFREG,
    tarfile.AREGTYPE: stat.S_IFREG,
    tarfile.CONTTYPE: stat.S_IFREG,
    tarfile.GNUTYPE_SPARSE: stat.S_IFREG,
    tarfile.DIRTYPE: stat.S_IFDIR,
    tarfile.SYMTYPE: stat.S_IFLNK,
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}
_DAMAGE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)


def read_tar_file(path: Path, sink: ContentSink, *, whiteouts: bool) -> Node:
    """Read the tarball at `path` (compression detected from its first bytes)."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from exc
    with raw:
        return read_tar_stream(raw, sink, whiteouts=whiteouts, name=str(path))


def decompressed(raw: BinaryIO) -> BinaryIO:
    """Wrap `raw` in the decompressor its magic bytes call for."""
    head = raw.read(4)
    raw.seek(0)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head.startswith(ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 20)
    return raw


def read_tar_stream(raw: BinaryIO, sink: ContentSink, *, whiteouts: bool, name: str) -> Node:
    """Read one tar stream from `raw`; `name` names the source in errors."""
    reader = _TarReader(sink, whiteouts)
    try:
        stream = decompressed(raw)
        with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
            for member in tar:
                reader.add(tar, member)
        # Read to the end so that gzip checks its CRC and length trailer: damage in the last
        # member's bytes or in the padding would otherwise pass unnoticed.
        while stream.read(1 << 20):
            pass
    except _DAMAGE as exc:
        raise BrokenLayer(f"{name}: damaged tar or compressed stream: {exc}") from exc
    except UnsafeTarEntry as exc:
        raise UnsafeTarEntry(f"{name}: {exc}") from exc
    return reader.root


def _path_parts(name: str) -> list[bytes]:
    raw = name.encode("utf-8", "surrogateescape")
    if raw.startswith(b"/"):
        raise UnsafeTarEntry(f"entry {name!r} has an absolute path")
    parts = [p for p in raw.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise UnsafeTarEntry(f"entry {name!r} escapes the tree with '..'")
    return parts


class _TarReader:
    def __init__(self, sink: ContentSink, whiteouts: bool) -> None:
        self.sink = sink
        self.whiteouts = whiteouts
        self.root = new_dir()
        self.explicit: set[tuple[bytes, ...]] = set()

    def _parent(self, parts: list[bytes]) -> Node:
        node = self.root
        for part in parts[:-1]:
            assert node.children is not None
            child = node.children.get(part)
            if child is None or child.is_whiteout:
                child = node.children[part] = new_dir()
            elif not child.is_dir:
                raise UnsafeTarEntry(f"entry {b'/'.join(parts)!r} lies under non-directory {part!r}")
            node = child
        return node

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _path_parts(member.name)
        key = tuple(parts)
        if key in self.explicit:
            raise UnsafeTarEntry(f"entry {member.name!r} appears twice")
        self.explicit.add(key)
        if not parts:
            if member.isdir():
                self._set_attrs(self.root, member)
            return
        parent = self._parent(parts)
        assert parent.children is not None
        name = parts[-1]
        if self.whiteouts and name.startswith(WHITEOUT_PREFIX):
            if name == OPAQUE_MARKER:
                parent.opaque = True
            else:
                parent.children[name[len(WHITEOUT_PREFIX) :]] = Node(mode=WHITEOUT)
            return
        if member.islnk():
            target = self._find(_path_parts(member.linkname))
            if target is None or target.is_dir or target.is_whiteout:
                raise UnsafeTarEntry(f"hard link {member.name!r} points to missing entry {member.linkname!r}")
            parent.children[name] = target
            return
        if member.type not in _TYPE_BITS:
            raise UnsafeTarEntry(f"entry {member.name!r} has unsupported tar type {member.type!r}")
        existing = parent.children.get(name)
        if member.isdir() and existing is not None and existing.is_dir:
            self._set_attrs(existing, member)  # the directory was implied by an earlier entry
            return
        node = Node(mode=_TYPE_BITS[member.type])
        self._set_attrs(node, member)
        parent.children[name] = node
        if member.isdir():
            node.children = {}
        elif member.issym():
            node.target = member.linkname.encode("utf-8", "surrogateescape")
            node.size = len(node.target)
        elif member.ischr() or member.isblk():
            node.rdev = os.makedev(member.devmajor, member.devminor)
        elif stat.S_ISREG(node.mode):
            node.size = member.size
            stream = tar.extractfile(member)
            assert stream is not None
            try:
                self.sink.add_file(node, stream, member.size, b"/" + b"/".join(parts))
            except EOFError as exc:
                raise BrokenLayer(f"entry {member.name!r} is truncated: {exc}") from exc

    def _find(self, parts: list[bytes]) -> Node | None:
        node = self.root
        for part in parts:
            if node.children is None or part not in node.children:
                return None
            node = node.children[part]
        return node

    @staticmethod
    def _set_attrs(node: Node, member: tarfile.TarInfo) -> None:
        node.mode = stat.S_IFMT(node.mode) | (member.mode & 0o7777)
        node.uid, node.gid = member.uid, member.gid
        node.mtime_ns = _mtime_ns(member)
        node.xattrs = {
            k[len("SCHILY.xattr.") :].encode("utf-8", "surrogateescape"): v.encode("utf-8", "surrogateescape")
            for k, v in member.pax_headers.items()
            if k.startswith("SCHILY.xattr.")
        }


def _mtime_ns(member: tarfile.TarInfo) -> int:
    text = member.pax_headers.get("mtime")
    if text:
        whole, _, frac = text.partition(".")
        try:
            return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9] or 0) * (
                -1 if whole.startswith("-") else 1
            )
        except ValueError:
            pass
    return int(member.mtime) * 1_000_000_000
