"""`lazyfly check`: verify a lazyfly image end to end, and optionally compare it with its source.

Checks, in order, each adding readable problems to a report instead of stopping at the first:
the manifest and config (annotations, diff_ids), every blob's sha256 and size, the bootstrap's
checksums and its blob table, every blob's chunk table and every chunk's blake3, every chunk ref
of every file against its blob's table, the inode graph (entries in range, nlink), and with a
source, the whole tree: metadata and content.
"""

import gzip
import hashlib
import stat
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lazyfly.builder.image_source import LazyImage
from lazyfly.compression import decompress
from lazyfly.digest import blake3_digest, sha256_file
from lazyfly.errors import Corrupt
from lazyfly.format import oci_image as fmt
from lazyfly.format.chunk_table import TAIL_SIZE, ChunkTable, decode_table, decode_tail
from lazyfly.format.layout import ChunkEntry


@dataclass
class CheckReport:
    """Problems found, and how much was verified."""

    problems: list[str] = field(default_factory=list)
    chunks_verified: int = 0
    inodes: int = 0
    files_compared: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def add(self, problem: str) -> None:
        """Record one problem."""
        self.problems.append(problem)


def check_image(image: LazyImage, report: CheckReport) -> dict[int, ChunkTable]:
    """Verify everything in `image`; return the chunk table of each valid blob by index."""
    _check_manifest(image, report)
    try:
        image.bootstrap.verify_all()
    except Corrupt as exc:
        report.add(f"bootstrap: {exc}")
        return {}
    blobs = image.bootstrap.blobs()
    if [b.digest for b in blobs] != [d.digest for d in image.blob_layers]:
        report.add("bootstrap blob table does not list the manifest's data-blob layers in order")
    tables: dict[int, ChunkTable] = {}
    for i, layer in enumerate(image.blob_layers):
        table = _check_blob(image, i, report)
        if table is not None:
            tables[i] = table
            if i < len(blobs) and (blobs[i].chunk_count, blobs[i].uncompressed_size) != (
                len(table),
                table.entries[-1].uncompressed_offset + table.entries[-1].uncompressed_size
                if len(table)
                else 0,
            ):
                report.add(f"blob {layer.digest}: bootstrap and chunk table disagree on its size")
    _check_inodes(image, tables, report)
    return tables


def _check_manifest(image: LazyImage, report: CheckReport) -> None:
    manifest = image.manifest
    if manifest.annotations.get(fmt.ANNOTATION_IMAGE) != fmt.FORMAT_VERSION:
        report.add(f"manifest lacks {fmt.ANNOTATION_IMAGE}={fmt.FORMAT_VERSION}")
    diff_ids = image.config.get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest.layers):
        report.add(f"config lists {len(diff_ids)} diff_ids for {len(manifest.layers)} layers")
        return
    for layer, diff_id in zip(image.blob_layers, diff_ids, strict=False):
        if layer.annotations.get(fmt.ANNOTATION_BLOB) != "true":
            report.add(f"data-blob layer {layer.digest} lacks {fmt.ANNOTATION_BLOB}=true")
        if diff_id != layer.digest:
            report.add(f"data-blob layer {layer.digest} has diff_id {diff_id}")
    boot = image.layout.read_blob(image.bootstrap_layer.digest)
    try:
        plain = "sha256:" + hashlib.sha256(gzip.decompress(boot)).hexdigest()
    except (OSError, EOFError) as exc:
        report.add(f"bootstrap layer does not gunzip: {exc}")
        return
    if plain != diff_ids[-1]:
        report.add(f"bootstrap layer diff_id {diff_ids[-1]} does not match its content {plain}")


def _check_blob(image: LazyImage, index: int, report: CheckReport) -> ChunkTable | None:
    layer = image.blob_layers[index]
    path = image.layout.blob_path(layer.digest)
    if not path.is_file():
        report.add(f"blob {layer.digest} is missing")
        return None
    digest, size = sha256_file(str(path))
    if (digest, size) != (layer.digest, layer.size):
        report.add(
            f"blob {layer.digest}: content has digest {digest} and {size} bytes (manifest: {layer.size})"
        )
        return None
    with open(path, "rb") as f:
        try:
            f.seek(size - TAIL_SIZE)
            tail = decode_tail(f.read(TAIL_SIZE), size)
            f.seek(tail.table_offset)
            table = decode_table(f.read(tail.table_size), tail)
        except (Corrupt, ValueError, OSError) as exc:
            report.add(f"blob {layer.digest}: chunk table: {exc}")
            return None
    bad = _verify_chunks(path, table.entries)
    report.chunks_verified += len(table) - len(bad)
    for entry, problem in bad:
        report.add(
            f"blob {layer.digest}: chunk at uncompressed offset {entry.uncompressed_offset}: {problem}"
        )
    return table


def _verify_chunks(path: Path, entries: list[ChunkEntry]) -> list[tuple[ChunkEntry, str]]:
    def verify(entry: ChunkEntry) -> tuple[ChunkEntry, str] | None:
        with open(path, "rb") as f:
            f.seek(entry.compressed_offset)
            stored = f.read(entry.compressed_size)
        try:
            data = decompress(stored, entry.compressor, entry.uncompressed_size)
        except Corrupt as exc:
            return entry, str(exc)
        if blake3_digest(data) != entry.digest:
            return entry, "blake3 digest mismatch"
        return None

    with ThreadPoolExecutor(thread_name_prefix="verify") as pool:
        return [r for r in pool.map(verify, entries) if r is not None]


def _check_inodes(image: LazyImage, tables: dict[int, ChunkTable], report: CheckReport) -> None:
    boot = image.bootstrap
    names = Counter()
    for path, inode in boot.walk():
        report.inodes += 1
        names[inode.ino] += 1
        where = path.decode(errors="replace")
        if not stat.S_ISREG(inode.mode):
            continue
        for ref in boot.chunks(inode):
            table = tables.get(ref.blob_index)
            if table is None:
                continue  # already reported with its blob
            entry = table.find(ref.uncompressed_offset)
            if entry is None or (
                entry.uncompressed_offset,
                entry.compressed_offset,
                entry.compressed_size,
                entry.digest,
            ) != (ref.uncompressed_offset, ref.compressed_offset, ref.compressed_size, ref.digest):
                report.add(f"{where}: chunk at file offset {ref.file_offset} does not match its blob")
    for ino, count in names.items():
        inode = boot.inode(ino)
        if not stat.S_ISDIR(inode.mode) and inode.nlink != count:
            report.add(f"inode {ino}: nlink {inode.nlink} but {count} names")
