"""The manifests and bootstraps of the images fusefs loaded, kept in its cache directory.

Files in CACHE/bootstraps, named by the image's manifest digest: `<algo>-<hex>` (the bootstrap)
and `<algo>-<hex>.manifest` (the manifest's bytes, as the registry or layout served them).

Rules:
- Rule 1 (verified, then in place): a bootstrap is written only after it verified (header and
  every block), and each file through a temp file (`.incoming-*`, lazyfly.files), so a file under
  its final name is whole.
- Rule 2 (pinned images load without their registry): an image named by its manifest digest whose
  two files are here is loaded from them, without a request. The manifest's bytes are checked
  against the digest (and must be a lazyfly image's), and the bootstrap was verified when it was
  stored, so nothing is trusted that the digest does not vouch for. A daemon that restarts, takes
  a session over, or is asked again for an image it served, so keeps serving what its chunk cache
  holds while the registry is down. A manifest that does not match is dropped with a warning and
  the image is fetched again.
- Plain blocking file I/O: callers on an event loop run it in a worker thread.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from lazyfly.errors import Corrupt, InvalidArgument
from lazyfly.files import write_atomically
from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.lazy_image import LazyImageMetadata, lazy_manifest
from lazyfly.oci.manifest import Descriptor

log = logging.getLogger(__name__)

BOOTSTRAPS_DIR = "bootstraps"
MANIFEST_SUFFIX = ".manifest"
INCOMING_PREFIX = ".incoming-"  # a file being written, renamed into place when whole


@dataclass(frozen=True)
class StoredImage:
    """A loaded image's metadata in the cache: its manifest digest, data-blob layers, bootstrap file."""

    manifest_digest: str
    blob_layers: list[Descriptor]
    bootstrap_path: Path


def _paths(cache_dir: Path, manifest_digest: str) -> tuple[Path, Path]:
    bootstrap = cache_dir / BOOTSTRAPS_DIR / manifest_digest.replace(":", "-")
    return bootstrap, bootstrap.with_name(bootstrap.name + MANIFEST_SUFFIX)


def load_stored(cache_dir: Path, manifest_digest: str, where: str) -> StoredImage | None:
    """The image whose manifest digest is `manifest_digest`, if the cache holds it (Rule 2)."""
    bootstrap, manifest = _paths(cache_dir, manifest_digest)
    try:
        data = manifest.read_bytes()
    except FileNotFoundError:
        return None
    if not bootstrap.is_file():
        return None
    try:
        document = lazy_manifest(data, manifest_digest, where)
    except (Corrupt, InvalidArgument) as exc:
        log.warning("%s; fetching the image again", exc)
        manifest.unlink(missing_ok=True)
        return None
    return StoredImage(manifest_digest, document.layers[:-1], bootstrap)


def store(cache_dir: Path, meta: LazyImageMetadata) -> StoredImage:
    """Keep the manifest and the (verified) bootstrap of `meta`; files already here are kept."""
    bootstrap, manifest = _paths(cache_dir, meta.descriptor.digest)
    if not bootstrap.is_file():
        Bootstrap(meta.bootstrap).verify_all()
        write_atomically(bootstrap, meta.bootstrap, temp_prefix=INCOMING_PREFIX)
    if not manifest.is_file():
        write_atomically(manifest, meta.manifest_bytes, temp_prefix=INCOMING_PREFIX)
    return StoredImage(meta.descriptor.digest, meta.blob_layers, bootstrap)
