"""Find a lazyfly image's manifest and bootstrap wherever it lives, without fetching data blobs.

Used by `inspect` and by the FUSE daemon when it adds an image: a registry image costs three
requests (manifest, maybe an index first, the bootstrap layer); a local OCI layout is read in
place. Rule: an image whose last layer is not a lazyfly bootstrap is refused by name.
"""

from dataclasses import dataclass
from pathlib import Path

import anyio

from lazyfly.errors import Corrupt, InvalidArgument
from lazyfly.format import oci_image as fmt
from lazyfly.oci.auth import RegistryAuth
from lazyfly.oci.layout import OciLayout
from lazyfly.oci.locate import ImageLocation
from lazyfly.oci.manifest import Descriptor, Manifest, parse_manifest, sha256_digest
from lazyfly.oci.reference import OciLayoutRef, RegistryRef
from lazyfly.oci.registry import RegistryClient


class NotALazyImage(InvalidArgument):
    """The image exists but is not a lazyfly image."""


@dataclass
class LazyImageMetadata:
    """What a reader needs before any data: manifest (and its bytes), its descriptor, the
    bootstrap's bytes."""

    manifest: Manifest
    descriptor: Descriptor
    bootstrap: bytes
    manifest_bytes: bytes

    @property
    def blob_layers(self) -> list[Descriptor]:
        """The data-blob layers, in blob-index order."""
        return self.manifest.layers[:-1]


async def fetch_lazy_metadata(
    location: ImageLocation, *, plain_http: bool = False, platform: str = "linux/amd64"
) -> LazyImageMetadata:
    """Return the manifest and bootstrap of the lazyfly image at `location`."""
    if isinstance(location, RegistryRef):
        return await _from_registry(location, plain_http, platform)
    if isinstance(location, OciLayoutRef):
        path, tag = location.path, location.tag
    else:
        path, tag = Path(location), None
    return await anyio.to_thread.run_sync(_from_layout, path, tag, platform)


def _from_layout(path: Path, tag: str | None, platform: str) -> LazyImageMetadata:
    layout = OciLayout(path).open()
    manifest, data, desc = layout.read_manifest(tag, platform=platform)
    last = _bootstrap_layer(manifest, str(path))
    return LazyImageMetadata(manifest, desc, fmt.read_bootstrap_layer(layout.read_blob(last.digest)), data)


async def _from_registry(ref: RegistryRef, plain_http: bool, platform: str) -> LazyImageMetadata:
    auth = await anyio.to_thread.run_sync(RegistryAuth.from_docker_config, ref.registry)
    async with RegistryClient(ref.registry, plain_http=plain_http, auth=auth) as client:
        document, desc, data = await client.get_image_manifest(ref.repository, ref.reference, platform)
        last = _bootstrap_layer(document, str(ref))
        layer = await client.get_blob(ref.repository, last.digest)
    return LazyImageMetadata(document, desc, fmt.read_bootstrap_layer(layer), data)


def lazy_manifest(data: bytes, digest: str, where: str) -> Manifest:
    """The manifest of a lazyfly image from its stored bytes, checked against `digest`, the digest
    it was fetched by; Corrupt if the bytes are not that manifest, NotALazyImage if it is not a
    lazyfly image's."""
    if sha256_digest(data) != digest:
        raise Corrupt(f"{where}: the stored manifest does not match its digest {digest}")
    document = parse_manifest(data)
    if not isinstance(document, Manifest):
        raise Corrupt(f"{where}: the stored manifest {digest} is an index")
    _bootstrap_layer(document, where)
    return document


def _bootstrap_layer(manifest: Manifest, where: str) -> Descriptor:
    if not manifest.layers or manifest.layers[-1].annotations.get(fmt.ANNOTATION_BOOTSTRAP) != "true":
        raise NotALazyImage(f"{where} is not a lazyfly image: its last layer is not a bootstrap")
    last = manifest.layers[-1]
    if last.size > fmt.MAX_BOOTSTRAP_SIZE:
        raise NotALazyImage(f"{where}: bootstrap layer of {last.size} bytes is implausibly large")
    return last
