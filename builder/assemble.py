"""Turn a merged tree into the bootstrap: number inodes, resolve chunk refs, place the prefetch list.

Rules: inodes are numbered depth-first in sorted name order from the root (1); a hard-link group is
one inode whose nlink counts its names; a directory's nlink is 2 plus its subdirectories; blob
indexes follow the order of `blobs`, and only blobs that some chunk uses or that belong to a layer
are listed.
"""

import stat
from collections.abc import Sequence
from dataclasses import dataclass

from lazyfly.builder.blob_writer import BlobHandle, StoredChunk
from lazyfly.builder.errors import SourceError
from lazyfly.builder.tree import Node, find
from lazyfly.format.bootstrap_writer import encode_bootstrap
from lazyfly.format.layout import BlobInfo, ChunkRef, InodeSpec


@dataclass
class Assembled:
    """The bootstrap bytes and the blobs it lists, in blob-index order."""

    bootstrap: bytes
    blobs: list[BlobHandle]
    inode_count: int


def assemble(
    root: Node,
    layer_blobs: Sequence[BlobHandle],
    chunk_size: int,
    prefetch_paths: Sequence[str] = (),
) -> Assembled:
    """Return the bootstrap of the merged tree `root` whose chunks live in `layer_blobs`."""
    blobs = list(layer_blobs)
    blob_index = {id(b): i for i, b in enumerate(blobs)}
    inos: dict[int, int] = {}
    specs: list[InodeSpec] = []
    stack: list[tuple[Node, int]] = [(root, 1)]
    while stack:
        node, parent_ino = stack.pop()
        ino = _number(node, inos, specs, parent_ino)
        if node.children is None:
            continue
        spec = specs[ino - 1]
        subdirs = []
        for name in sorted(node.children):
            child = node.children[name]
            known = inos.get(id(child))
            if known is not None:  # a hard link seen before
                specs[known - 1].nlink += 1
                spec.entries.append((name, known))
                continue
            child_ino = _number(child, inos, specs, ino)
            spec.entries.append((name, child_ino))
            if child.children is not None:
                subdirs.append(child)
        spec.nlink = 2 + len(subdirs)
        for child in reversed(subdirs):
            stack.append((child, ino))
    for spec in specs:
        if stat.S_ISREG(spec.mode):
            _resolve_chunks(spec, blobs, blob_index)
    prefetch = _prefetch_inos(root, prefetch_paths, inos)
    infos = [
        BlobInfo(b.digest, b.compressed_size, b.uncompressed_size, b.chunk_count, b.prefetch) for b in blobs
    ]
    return Assembled(encode_bootstrap(specs, infos, prefetch, chunk_size), blobs, len(specs))


def _number(node: Node, inos: dict[int, int], specs: list[InodeSpec], parent_ino: int) -> int:
    ino = inos.get(id(node))
    if ino is not None:
        return ino
    ino = len(specs) + 1
    inos[id(node)] = ino
    specs.append(
        InodeSpec(
            mode=node.mode,
            uid=node.uid,
            gid=node.gid,
            size=node.size,
            blocks=node.blocks,
            mtime_ns=node.mtime_ns,
            rdev=node.rdev,
            parent=parent_ino if node.children is not None else 0,
            xattrs=node.xattrs,
            target=node.target,
            chunks=node.chunks,  # type: ignore[arg-type]  (StoredChunk pairs, resolved below)
        )
    )
    return ino


def _resolve_chunks(spec: InodeSpec, blobs: list[BlobHandle], blob_index: dict[int, int]) -> None:
    refs = []
    pairs: list[tuple[int, StoredChunk]] = spec.chunks  # type: ignore[assignment]
    for offset, stored in pairs:
        index = blob_index.get(id(stored.blob))
        if index is None:  # a chunk dictionary's blob, listed on first use
            index = blob_index[id(stored.blob)] = len(blobs)
            blobs.append(stored.blob)
        e = stored.entry
        refs.append(
            ChunkRef(
                offset,
                index,
                e.compressed_offset,
                e.compressed_size,
                e.uncompressed_offset,
                e.uncompressed_size,
                e.compressor,
                e.digest,
            )
        )
    spec.chunks = refs
    if spec.blocks == 0 and refs:
        spec.blocks = sum(-(-r.uncompressed_size // 512) for r in refs)


def _prefetch_inos(root: Node, paths: Sequence[str], inos: dict[int, int]) -> list[int]:
    out = []
    for path in paths:
        node = find(root, path.encode("utf-8", "surrogateescape"))
        if node is None:
            raise SourceError(f"prefetch list names {path!r}, which is not in the image")
        ino = inos[id(node)]
        if ino not in out:
            out.append(ino)
    return out
