"""Load an image for serving: fetch its bootstrap, keep it in the cache, open a reader per blob.

Rules: the manifest and the verified bootstrap are kept in the cache (bootstrap_store.py), and an
image pinned by manifest digest that the cache holds loads from there without its registry; the
bootstrap is mmapped; the blob table of the bootstrap must list exactly the manifest's data-blob
layers; one backend serves all the blobs of an image; readers and backends are shared through the
namespace's pool (fusefs/reader_pool.py).
"""

from pathlib import Path

import trio

from lazyfly.backend.factory import open_backend
from lazyfly.errors import Corrupt
from lazyfly.format.bootstrap_reader import open_bootstrap
from lazyfly.fusefs.bootstrap_store import StoredImage, load_stored, store
from lazyfly.fusefs.chunk_cache import BLOBS_DIR
from lazyfly.fusefs.config import ImageSettings
from lazyfly.fusefs.image import MountedImage
from lazyfly.fusefs.namespace import Namespace
from lazyfly.fusefs.read_ahead import ReadAhead
from lazyfly.lazy_image import fetch_lazy_metadata
from lazyfly.oci.locate import ImageLocation
from lazyfly.oci.reference import RegistryRef


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
    stored = await _stored_or_fetched(location, cache_dir, settings.backend.plain_http)
    bootstrap = open_bootstrap(stored.bootstrap_path)
    blobs = bootstrap.blobs()
    if [b.digest for b in blobs] != [layer.digest for layer in stored.blob_layers]:
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
        manifest_digest=stored.manifest_digest,
    )


async def _stored_or_fetched(location: ImageLocation, cache_dir: Path, plain_http: bool) -> StoredImage:
    """The image's metadata from the cache when it is pinned by digest and kept there, else fetched
    (and kept) (bootstrap_store.py)."""
    if isinstance(location, RegistryRef) and location.digest:
        stored = await trio.to_thread.run_sync(load_stored, cache_dir, location.digest, str(location))
        if stored is not None:
            return stored
    meta = await fetch_lazy_metadata(location, plain_http=plain_http)
    return await trio.to_thread.run_sync(store, cache_dir, meta)
