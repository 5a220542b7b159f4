"""Package a built image as an OCI image layout, atomically.

The layout is assembled in a hidden sibling directory (`.NAME.partial-PID`) and renamed into
place only once every blob, the config, the manifest and index.json are written and synced, so
an interrupted build never leaves a directory that looks like a complete image. An existing
output directory is replaced whole.
"""

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lazyfly.builder.blob_writer import BlobHandle
from lazyfly.format import oci_image as fmt
from lazyfly.oci.layout import OciLayout
from lazyfly.oci.manifest import OCI_CONFIG, OCI_MANIFEST, Descriptor, Manifest, encode

DEFAULT_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "config": {},
}


@dataclass
class ImageSpec:
    """What goes into the manifest besides the blobs."""

    chunk_size: int
    compressor: str
    tag: str
    base_config: dict[str, Any] | None = None
    subject: Descriptor | None = None
    source_layers: Sequence[str] = ()


class PartialLayout:
    """A layout under construction beside its final place; `commit` renames it in."""

    def __init__(self, final: Path) -> None:
        self.final = final.absolute()
        self.path = self.final.parent / f".{self.final.name}.partial-{os.getpid()}"
        shutil.rmtree(self.path, ignore_errors=True)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.layout = OciLayout(self.path).create()
        self.work = self.path / ".work"
        self.work.mkdir()

    def commit(self) -> None:
        """Replace the final directory with the finished layout."""
        shutil.rmtree(self.work)
        _fsync_dir(self.path)
        old = None
        if self.final.exists():
            old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
            os.rename(self.final, old)
        os.rename(self.path, self.final)
        _fsync_dir(self.final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Delete everything written so far."""
        shutil.rmtree(self.path, ignore_errors=True)


def write_manifest(
    layout: OciLayout,
    blobs: Sequence[BlobHandle],
    bootstrap: bytes,
    spec: ImageSpec,
    work: Path,
) -> Descriptor:
    """Store `blobs` and the bootstrap layer in `layout`, write config and manifest, tag it."""
    layers = []
    diff_ids = []
    for i, blob in enumerate(blobs):
        annotations = {
            fmt.ANNOTATION_BLOB: "true",
            fmt.ANNOTATION_UNCOMPRESSED_SIZE: str(blob.uncompressed_size),
            fmt.ANNOTATION_CHUNK_COUNT: str(blob.chunk_count),
        }
        assert blob.path is not None
        if blob.from_dictionary:
            # The dictionary's own copy stays where it is: link or copy it in, never move it.
            annotations[fmt.ANNOTATION_FROM_DICTIONARY] = "true"
            incoming = work / f"dict-{i}"
            try:
                os.link(blob.path, incoming)
            except OSError:
                shutil.copyfile(blob.path, incoming)
            desc = layout.add_blob_file(incoming, fmt.BLOB_MEDIA_TYPE, blob.digest)
        else:
            desc = layout.add_blob_file(blob.path, fmt.BLOB_MEDIA_TYPE, blob.digest)
            if i < len(spec.source_layers):
                annotations[fmt.ANNOTATION_SOURCE_LAYER] = spec.source_layers[i]
        layers.append(replace(desc, annotations=annotations))
        diff_ids.append(blob.digest)
    boot_layer, boot_diff_id = fmt.bootstrap_layer(bootstrap)
    layers.append(
        layout.write_blob(
            boot_layer,
            fmt.BOOTSTRAP_MEDIA_TYPE,
            {
                fmt.ANNOTATION_BOOTSTRAP: "true",
                fmt.ANNOTATION_IMAGE: fmt.FORMAT_VERSION,
                fmt.ANNOTATION_CHUNK_SIZE: str(spec.chunk_size),
                fmt.ANNOTATION_COMPRESSOR: spec.compressor,
            },
        )
    )
    diff_ids.append(boot_diff_id)
    config = dict(spec.base_config or DEFAULT_CONFIG)
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config.pop("history", None)  # the source's history describes layers this image does not have
    config_desc = layout.write_blob(
        json.dumps(config, separators=(",", ":"), sort_keys=True).encode(), OCI_CONFIG
    )
    manifest = Manifest(
        media_type=OCI_MANIFEST,
        config=config_desc,
        layers=layers,
        subject=spec.subject,
        annotations={fmt.ANNOTATION_IMAGE: fmt.FORMAT_VERSION},
    )
    manifest_desc = layout.write_blob(encode(manifest), OCI_MANIFEST)
    return layout.tag(manifest_desc, spec.tag)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
