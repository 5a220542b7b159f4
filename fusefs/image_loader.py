"""Load an image for serving: fetch its bootstrap, keep it in the cache, open a reader per blob.

Rules: the bootstrap is written to `<cache>/bootstraps/<manifest digest>` only after it verified
(header and every block), by temp file and rename, and is then mmapped; the blob table of the
bootstrap must list exactly the manifest's data-blob layers; one backend serves all the blobs of
an image; readers and backends are shared through the namespace's pool (fusefs/reader_pool.py).
"""

import os
import tempfile
from pathlib import Path

import trio

from lazyfly.backend.factory import open_backend
from lazyfly.errors import Corrupt
from lazyfly.format.bootstrap_reader import Bootstrap, open_bootstrap
from lazyfly.fusefs.cache_gc import BLOBS_DIR, BOOTSTRAPS_DIR, INCOMING_PREFIX
from lazyfly.fusefs.config import ImageSettings
from lazyfly.fusefs.image import MountedImage
from lazyfly.fusefs.namespace import Namespace
from lazyfly.fusefs.read_ahead import ReadAhead
from lazyfly.lazy_image import fetch_lazy_metadata
from lazyfly.oci.locate import ImageLocation


async def load_image(
    namespace: Namespace,
    image_id: str,
    location: ImageLocation,
    cache_dir: Path,
    settings: ImageSettings,
    slot: int = 0,
) -> MountedImage:
    """Return `location`'s image ready to serve as `image_id` (not yet added to `namespace`), in
    `slot` if given."""
    slot = namespace.reserve_slot(image_id, slot)
    meta = await fetch_lazy_metadata(location, plain_http=settings.backend.plain_http)
    path = await trio.to_thread.run_sync(_store_bootstrap, cache_dir, meta.descriptor.digest, meta.bootstrap)
    bootstrap = open_bootstrap(path)
    blobs = bootstrap.blobs()
    if [b.digest for b in blobs] != [layer.digest for layer in meta.blob_layers]:
        raise Corrupt(f"{location}: the bootstrap's blob table does not match the manifest's layers")
    backend = open_backend(
        settings.backend.kind,
        location,
        proxy_url=settings.backend.proxy_url,
        plain_http=settings.backend.plain_http,
    )
    pool = namespace.readers
    pool.hold_backend(backend)
    readers = []
    try:
        for blob in blobs:
            readers.append(pool.acquire(cache_dir / BLOBS_DIR, blob, backend, settings.merge_limit))
    except BaseException:
        for reader in readers:
            await pool.release(reader)
        await pool.release_backend(backend)
        raise
    return MountedImage(
        image_id,
        slot,
        bootstrap,
        readers,
        backend,
        pool,
        str(location),
        read_amplify=settings.merge_limit,
        read_ahead=ReadAhead.up_to(settings.read_ahead),
        manifest_digest=meta.descriptor.digest,
    )


def _store_bootstrap(cache_dir: Path, manifest_digest: str, data: bytes) -> Path:
    directory = cache_dir / BOOTSTRAPS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / manifest_digest.replace(":", "-")
    if path.is_file():
        return path
    boot = Bootstrap(data)
    boot.verify_all()
    fd, temp = tempfile.mkstemp(dir=directory, prefix=INCOMING_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
