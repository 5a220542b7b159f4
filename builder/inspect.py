"""`lazyfly inspect`: what is in a lazyfly image: summary, blobs, chunk and dedup figures, tree.

Everything comes from the manifest and the bootstrap; no data blob is read, so inspecting a
registry image fetches only its manifest, config and bootstrap layer.
"""

import stat
from collections import Counter
from typing import Any

from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.oci.manifest import Descriptor, Manifest

_KINDS = {
    stat.S_IFREG: "files",
    stat.S_IFDIR: "directories",
    stat.S_IFLNK: "symlinks",
    stat.S_IFCHR: "char devices",
    stat.S_IFBLK: "block devices",
    stat.S_IFIFO: "fifos",
}


def describe(
    manifest: Manifest, descriptor: Descriptor, boot: Bootstrap, bootstrap_size: int
) -> dict[str, Any]:
    """Return the inspection of an image as plain data (what `--json` prints)."""
    kinds: Counter[str] = Counter()
    refs = 0
    unique: set[tuple[int, int]] = set()
    file_bytes = 0
    data_bytes = 0
    tree = []
    seen: set[int] = set()
    for path, inode in boot.walk():
        entry: dict[str, Any] = {
            "path": path.decode("utf-8", "backslashreplace"),
            "mode": stat.filemode(inode.mode),
            "uid": inode.uid,
            "gid": inode.gid,
            "size": inode.size,
            "mtime_ns": inode.mtime_ns,
            "ino": inode.ino,
        }
        if stat.S_ISLNK(inode.mode):
            entry["target"] = boot.readlink(inode).decode("utf-8", "backslashreplace")
        if stat.S_ISCHR(inode.mode) or stat.S_ISBLK(inode.mode):
            entry["rdev"] = inode.rdev
        tree.append(entry)
        if inode.ino in seen:
            continue
        seen.add(inode.ino)
        kinds[_KINDS.get(stat.S_IFMT(inode.mode), "other")] += 1
        if stat.S_ISREG(inode.mode):
            file_bytes += inode.size
            for ref in boot.chunks(inode):
                refs += 1
                data_bytes += ref.uncompressed_size
                unique.add((ref.blob_index, ref.uncompressed_offset))
    blobs = [
        {
            "digest": b.digest,
            "compressed_size": b.compressed_size,
            "uncompressed_size": b.uncompressed_size,
            "chunks": b.chunk_count,
            "prefetch": b.prefetch,
        }
        for b in boot.blobs()
    ]
    stored = sum(b["compressed_size"] for b in blobs)
    return {
        "manifest": descriptor.digest,
        "layers": len(manifest.layers),
        "chunk_size": boot.chunk_size,
        "inodes": boot.inode_count,
        "kinds": dict(kinds),
        "bootstrap_size": bootstrap_size,
        "blobs": blobs,
        "chunks": {
            "references": refs,
            "unique": len(unique),
            "deduplicated_references": refs - len(unique),
            "file_bytes": file_bytes,
            "hole_bytes": file_bytes - data_bytes,
            "stored_bytes": stored,
            "compression_ratio": round(stored / data_bytes, 4) if data_bytes else None,
        },
        "prefetch": boot.prefetch(),
        "tree": tree,
    }
