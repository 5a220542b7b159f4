"""Open an image for reading, wherever it lives, as a local OCI layout.

A local directory or `oci:` layout is read in place; a registry image is pulled into a temporary
layout first (removed when the context ends). `open_lazy_image` then checks that the image is a
lazyfly image and hands out its manifest, config and verified bootstrap.
"""

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from lazyfly.builder.errors import SourceError
from lazyfly.format import oci_image as fmt
from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.oci.layout import OciLayout
from lazyfly.oci.locate import ImageLocation
from lazyfly.oci.manifest import Descriptor, Manifest
from lazyfly.oci.reference import OciLayoutRef, RegistryRef
from lazyfly.oci.transfer import pull_image
from lazyfly.progress import ProgressSink


@dataclass
class LocalImage:
    """An image whose blobs are all in `layout`."""

    layout: OciLayout
    manifest: Manifest
    descriptor: Descriptor
    config: dict[str, Any]


@dataclass
class LazyImage(LocalImage):
    """A local lazyfly image: its data-blob layers, bootstrap layer and bootstrap."""

    blob_layers: list[Descriptor]
    bootstrap_layer: Descriptor
    bootstrap: Bootstrap


@contextlib.contextmanager
def open_local_image(
    location: ImageLocation,
    *,
    plain_http: bool = False,
    platform: str = "linux/amd64",
    progress: ProgressSink | None = None,
) -> Iterator[LocalImage]:
    """Yield the image at `location` with every blob on local disk."""
    if isinstance(location, RegistryRef):
        with tempfile.TemporaryDirectory(prefix="lazyfly-pull-") as tmp:
            layout = OciLayout(Path(tmp)).create()
            anyio.run(
                lambda: pull_image(
                    location, layout, platform=platform, plain_http=plain_http, progress=progress
                )
            )
            yield _load(layout, platform)
        return
    if isinstance(location, OciLayoutRef):
        layout, tag = OciLayout(location.path).open(), location.tag
    else:
        if not (location / "oci-layout").is_file():
            raise SourceError(f"{location} is not an OCI image layout (no oci-layout file)")
        layout, tag = OciLayout(location).open(), None
    manifest, _, desc = layout.read_manifest(tag, platform=platform)
    yield LocalImage(layout, manifest, desc, _config(layout, manifest))


def _load(layout: OciLayout, platform: str) -> LocalImage:
    manifest, _, desc = layout.read_manifest(None, platform=platform)
    return LocalImage(layout, manifest, desc, _config(layout, manifest))


def _config(layout: OciLayout, manifest: Manifest) -> dict[str, Any]:
    try:
        config = json.loads(layout.read_blob(manifest.config.digest))
    except ValueError as exc:
        raise SourceError(f"image config {manifest.config.digest} is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise SourceError(f"image config {manifest.config.digest} is not a JSON object")
    return config


def as_lazy_image(image: LocalImage) -> LazyImage:
    """Check that `image` is a lazyfly image and read its bootstrap (checksums verified)."""
    layers = image.manifest.layers
    if not layers or layers[-1].annotations.get(fmt.ANNOTATION_BOOTSTRAP) != "true":
        raise SourceError(
            f"image {image.descriptor.digest} is not a lazyfly image: its last layer is not a bootstrap"
        )
    blob_layers = layers[:-1]
    for layer in blob_layers:
        if layer.media_type != fmt.BLOB_MEDIA_TYPE:
            raise SourceError(f"layer {layer.digest} of a lazyfly image has media type {layer.media_type}")
    raw = fmt.read_bootstrap_layer(image.layout.read_blob(layers[-1].digest))
    return LazyImage(
        image.layout,
        image.manifest,
        image.descriptor,
        image.config,
        blob_layers,
        layers[-1],
        Bootstrap(raw),
    )
