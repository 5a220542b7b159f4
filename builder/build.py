"""Build a lazyfly image from layers: chunk every layer into its own blob (the files of the
prefetch list into one blob after them), merge, write the layout.

Rule: either the output layout appears complete, or nothing of it remains: blobs are written in
the partial layout's work directory and everything is deleted on any error (a full disk included).
"""

import gc
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lazyfly.builder.assemble import assemble
from lazyfly.builder.blob_writer import BlobWriter
from lazyfly.builder.chunker import Chunker, ChunkIndex, ChunkStats
from lazyfly.builder.content_sink import ContentSink
from lazyfly.builder.dir_source import read_directory
from lazyfly.builder.errors import SourceError
from lazyfly.builder.image_writer import ImageSpec, PartialLayout, write_manifest
from lazyfly.builder.prefetch_placement import PrefetchPlacement
from lazyfly.builder.tar_source import read_tar_file
from lazyfly.builder.tree import Node, merge, new_dir
from lazyfly.compression import Compressor
from lazyfly.format.layout import DEFAULT_CHUNK_SIZE, is_valid_chunk_size
from lazyfly.oci.manifest import Descriptor
from lazyfly.prefetch_list import PrefetchEntry, parse_prefetch_list
from lazyfly.progress import NullProgress, ProgressSink

SWITCH_INTERVAL = 0.0005
LayerReader = Callable[[ContentSink], Node]


@dataclass
class FormatOptions:
    """The knobs of the format that `build` and `convert` share."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    compressor: Compressor = Compressor.ZSTD
    prefetch: Sequence[PrefetchEntry] = ()
    chunk_dictionary: ChunkIndex = field(default_factory=dict)
    tag: str = "latest"

    def __post_init__(self) -> None:
        if not is_valid_chunk_size(self.chunk_size):
            raise SourceError(f"chunk size {self.chunk_size} is not a power of two between 4 KiB and 16 MiB")


@dataclass
class BuildResult:
    """What a build produced, for the CLI's summary."""

    manifest: Descriptor
    stats: ChunkStats
    inode_count: int
    blob_count: int
    bootstrap_size: int


def source_layer(path: Path) -> LayerReader:
    """Return the reader for a directory, `.tar`, `.tar.gz` or `.tgz` given to `build`."""
    if path.is_dir():
        return lambda sink: read_directory(path, sink)
    if path.is_file():
        return lambda sink: read_tar_file(path, sink, whiteouts=False)
    raise SourceError(f"source {path} is neither a directory nor a tarball")


def build_layers(
    layers: Sequence[LayerReader],
    out: Path,
    options: FormatOptions,
    *,
    base_config: dict[str, Any] | None = None,
    subject: Descriptor | None = None,
    source_layers: Sequence[str] = (),
    progress: ProgressSink | None = None,
) -> BuildResult:
    """Build the image of `layers` (lowest first) into the OCI layout directory `out`."""
    partial = PartialLayout(out)
    # A build allocates millions of long-lived objects and no cycles: the cyclic collector
    # would only rescan them again and again.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    # The walking thread makes a few syscalls per file, and after each it must win the GIL back
    # from a worker: a short switch interval keeps that wait from dominating small files.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    index: ChunkIndex = dict(options.chunk_dictionary)
    workers = os.cpu_count() or 2
    with ThreadPoolExecutor(workers, thread_name_prefix="chunk") as pool:
        placement = PrefetchPlacement(options.prefetch)
        writer = BlobWriter(partial.work / "blob-prefetch", prefetch=True) if placement else None
        prefetch = (placement, writer) if writer is not None else None
        chunker = Chunker(
            options.chunk_size, options.compressor, pool, index, progress or NullProgress(), prefetch
        )
        try:
            merged = new_dir()
            blobs = []
            for i, read in enumerate(layers):
                chunker.start_blob(BlobWriter(partial.work / f"blob-{i}"))
                tree = read(chunker)
                blobs.append(chunker.finish_blob())
                merged = merge(merged, tree)
            prefetch_blob = chunker.finish_prefetch_blob()
            if prefetch_blob is not None:  # after the layers' blobs: blob i stays layer i's
                blobs.append(prefetch_blob)
            assembled = assemble(merged, blobs, options.chunk_size, [e.path for e in options.prefetch])
            spec = ImageSpec(
                chunk_size=options.chunk_size,
                compressor=options.compressor.name.lower(),
                tag=options.tag,
                base_config=base_config,
                subject=subject,
                source_layers=source_layers,
            )
            manifest = write_manifest(
                partial.layout, assembled.blobs, assembled.bootstrap, spec, partial.work
            )
            partial.commit()
        except BaseException:
            chunker.abort()
            partial.abort()
            raise
        finally:
            sys.setswitchinterval(switch_interval)
            if gc_was_enabled:
                gc.enable()
    return BuildResult(
        manifest, chunker.stats, assembled.inode_count, len(assembled.blobs), len(assembled.bootstrap)
    )


def read_prefetch_list(path: Path) -> list[PrefetchEntry]:
    """Read a prefetch list file (lazyfly/prefetch_list.py)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SourceError(f"cannot read prefetch list {path}: {exc.strerror}") from exc
    return parse_prefetch_list(text, str(path))
