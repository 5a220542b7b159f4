"""Remote layers: a Prepare that names a lazyfly image's layer is committed at once, without download.

containerd (ctr-remote rpull, or CRI with snapshot annotations) prepares each layer with labels that
name the image and the layer (labels.py). For a lazyfly image:
- a data-blob layer is committed under the `containerd.io/snapshot.ref` name, with nothing in it:
  its files are read through the image's root;
- the bootstrap layer (the last) makes the fusefs daemon serve the image, pinned by manifest digest
  (the daemon fetches the small bootstrap), and is committed as the image's root;
and the caller answers ALREADY_EXISTS, so containerd skips the download.

Rules:
- Rule 1 (fall back): labels that name a missing image, or a layer that is not a lazyfly layer,
  leave the Prepare to the ordinary path (containerd downloads and unpacks); a registry that fails
  or refuses us is an error containerd reports, with nothing created.
- Rule 2 (nothing half-made): the image is served before its root snapshot is recorded, and the
  snapshot and the image's record are written only after the daemon has it.
- Rule 3 (once): the manifest of one image is fetched once at a time and kept while its layers are
  prepared; a concurrent Prepare that finds the snapshot made answers the same way.
"""

import logging
from dataclasses import dataclass

import anyio

from lazyfly.api.fusefs import (
    DEFAULT_MERGE_LIMIT,
    DEFAULT_READ_AHEAD,
    AddImageRequest,
    BackendSpec,
    PrefetchSpec,
)
from lazyfly.errors import AlreadyExists, FailedPrecondition, InvalidArgument, LazyflyError, NotFound
from lazyfly.format import oci_image as fmt
from lazyfly.oci.auth import RegistryAuth
from lazyfly.oci.manifest import Descriptor, Manifest
from lazyfly.oci.reference import RegistryRef, parse_registry_ref
from lazyfly.oci.registry import RegistryClient
from lazyfly.snapshotter import metastore as ms
from lazyfly.snapshotter.fusefs_supervisor import FusefsSupervisor
from lazyfly.snapshotter.labels import LAZYFLY_BLOB, LAZYFLY_IMAGE, LayerSource, layer_source
from lazyfly.snapshotter.metrics import SnapshotterMetrics
from lazyfly.snapshotter.snapshotter import Snapshotter

log = logging.getLogger(__name__)

DEFAULT_MANIFEST_TIMEOUT = 60.0
MANIFEST_CACHE_SIZE = 64


@dataclass
class RemoteSettings:
    """How lazyfly images are fetched: straight from registries, or through a peer's proxy."""

    plain_http: frozenset[str] = frozenset()  # registries (host:port) spoken to over http
    peer_proxy: str | None = None
    platform: str = "linux/amd64"
    prefetch: PrefetchSpec | None = None
    merge_limit: int = DEFAULT_MERGE_LIMIT
    read_ahead: int = DEFAULT_READ_AHEAD


@dataclass
class _ResolvedImage:
    ref: RegistryRef
    manifest: Manifest
    descriptor: Descriptor


class RemoteLayers:
    """Turns lazy-layer Prepares into committed snapshots and served images."""

    def __init__(
        self,
        snapshotter: Snapshotter,
        fusefs: FusefsSupervisor,
        settings: RemoteSettings,
        metrics: SnapshotterMetrics,
    ) -> None:
        self.snapshotter = snapshotter
        self.fusefs = fusefs
        self.settings = settings
        self.metrics = metrics
        self._manifests: dict[str, _ResolvedImage] = {}
        self._manifest_locks: dict[str, anyio.Lock] = {}
        # held from an image's add to its root's commit, and by collection (Rule 2)
        self._images_lock = anyio.Lock()

    async def try_prepare(self, parent: str, labels: dict[str, str]) -> bool:
        """Commit the layer named by `labels` lazily if it is a lazyfly layer; False to fall back."""
        source = layer_source(labels)
        if source is None:
            return False
        if await anyio.to_thread.run_sync(self._exists, source.ref):
            return True
        found = await self._find_layer(source)
        if found is None:
            self.metrics.fallbacks.inc()
            return False
        image, layer = found
        lazy_labels = dict(labels)
        async with self._images_lock:
            if layer.annotations.get(fmt.ANNOTATION_BOOTSTRAP) == "true":
                request = await self.fusefs.ensure(self._add_request(image, layer))
                await anyio.to_thread.run_sync(self._remember, request)
                lazy_labels[LAZYFLY_IMAGE] = request.id
                self.metrics.lazy_layers.labels("bootstrap").inc()
            else:
                lazy_labels[LAZYFLY_BLOB] = "true"
                self.metrics.lazy_layers.labels("blob").inc()
            try:
                await anyio.to_thread.run_sync(
                    self.snapshotter.commit_remote, source.ref, parent, lazy_labels
                )
            except AlreadyExists:
                pass
        log.info("committed %s lazily: layer %s of %s", source.ref, source.layer_digest, source.image)
        return True

    async def serve_image(self, image_id: str) -> None:
        """Make the fusefs daemon serve a lazyfly image a snapshot is built on."""
        with self.snapshotter.store.transaction(False) as tx:
            request = ms.images(tx).get(image_id)
        if request is None:
            raise FailedPrecondition(f"lazyfly image {image_id} is not known to the snapshotter")
        await self.fusefs.ensure(AddImageRequest.from_json(request, f"stored image {image_id}"))

    async def collect_unused_images(self) -> list[str]:
        """Stop serving and forget the images no snapshot is built on; return their ids."""
        async with self._images_lock:
            in_use = await anyio.to_thread.run_sync(self.snapshotter.images_in_use)
            with self.snapshotter.store.transaction(False) as tx:
                unused = sorted(set(ms.images(tx)) - in_use)
            for image_id in unused:
                await self.fusefs.forget(image_id)
                with self.snapshotter.store.transaction(True) as tx:
                    ms.remove_image(tx, image_id)
                log.info("collected lazyfly image %s: no snapshot uses it", image_id)
            if unused:
                try:
                    await self.fusefs.collect_cache()
                except (LazyflyError, TimeoutError) as exc:  # the next Cleanup collects it
                    log.warning("cache collection deferred: %s", exc)
        return unused

    async def _find_layer(self, source: LayerSource) -> tuple[_ResolvedImage, Descriptor] | None:
        try:
            ref = parse_registry_ref(source.image)
        except InvalidArgument as exc:
            log.warning("%s: %s: falling back to a download", source.image, exc)
            return None
        if source.manifest_digest:
            ref = RegistryRef(ref.registry, ref.repository, ref.tag, source.manifest_digest)
        for fresh in (False, True):  # a tag may have moved since the manifest was cached
            try:
                image = await self._resolve(ref, fresh)
            except NotFound as exc:
                log.warning("%s: %s: falling back to a download", source.image, exc)
                return None
            layers = image.manifest.layers
            layer = next((layer for layer in layers if layer.digest == source.layer_digest), None)
            if layer is not None:
                return (image, layer) if _is_lazyfly_layer(layer) else None
        log.warning("%s: layer %s is not in its manifest: falling back", source.image, source.layer_digest)
        return None

    async def _resolve(self, ref: RegistryRef, fresh: bool) -> _ResolvedImage:
        key = str(ref)
        lock = self._manifest_locks.setdefault(key, anyio.Lock())
        async with lock:
            if not fresh and key in self._manifests:
                return self._manifests[key]
            auth = await anyio.to_thread.run_sync(RegistryAuth.from_docker_config, ref.registry)
            plain_http = ref.registry in self.settings.plain_http
            with anyio.fail_after(DEFAULT_MANIFEST_TIMEOUT):
                async with RegistryClient(ref.registry, plain_http=plain_http, auth=auth) as client:
                    manifest, descriptor, _ = await client.get_image_manifest(
                        ref.repository, ref.reference, self.settings.platform
                    )
            if len(self._manifests) >= MANIFEST_CACHE_SIZE:
                self._manifests.pop(next(iter(self._manifests)))
            self._manifests[key] = _ResolvedImage(ref, manifest, descriptor)
            return self._manifests[key]

    def _add_request(self, image: _ResolvedImage, bootstrap_layer: Descriptor) -> AddImageRequest:
        pinned = RegistryRef(image.ref.registry, image.ref.repository, None, image.descriptor.digest)
        proxy = self.settings.peer_proxy
        backend = BackendSpec(
            kind="proxy" if proxy else "registry",
            proxy_url=proxy,
            plain_http=image.ref.registry in self.settings.plain_http,
        )
        return AddImageRequest(
            id=bootstrap_layer.digest.partition(":")[2],
            reference=str(pinned),
            backend=backend,
            prefetch=self.settings.prefetch or PrefetchSpec(),
            merge_limit=self.settings.merge_limit,
            read_ahead=self.settings.read_ahead,
        )

    def _exists(self, name: str) -> bool:
        with self.snapshotter.store.transaction(False) as tx:
            return ms.exists(tx, name)

    def _remember(self, request: AddImageRequest) -> None:
        with self.snapshotter.store.transaction(True) as tx:
            ms.put_image(tx, request.id, request.to_json())


def _is_lazyfly_layer(layer: Descriptor) -> bool:
    return (
        layer.annotations.get(fmt.ANNOTATION_BLOB) == "true"
        or layer.annotations.get(fmt.ANNOTATION_BOOTSTRAP) == "true"
    )
