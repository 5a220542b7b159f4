"""OCI and Docker v2 manifests, indexes and descriptors: a pure model and codec (no I/O).

Rules kept:

- Rule 1: parsing validates structure and raises RemoteProtocolError naming the field that is
  wrong; the bytes came from outside (a registry or a layout on disk), so a bad one is never our bug.
- Rule 2: Docker schema 2 manifests and manifest lists are read into the same `Manifest` and
  `Index` types; their media type is kept, so `encode` writes back what was read (a re-encoded
  manifest only has the same digest if it was canonical to start with, which is why callers keep
  the original bytes for anything they push or verify).
- Rule 3: `encode` writes canonical JSON: sorted keys, no whitespace, empty optional fields left out.
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from lazyfly.errors import InvalidArgument, NotFound, RemoteProtocolError
from lazyfly.oci.reference import check_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
ALL_MANIFEST_TYPES = (*MANIFEST_TYPES, *INDEX_TYPES)

_COMPRESSION = {
    OCI_LAYER_TAR: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    DOCKER_LAYER_GZIP: "gzip",
}


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest and size, plus optional annotations and platform."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] | None = None
    urls: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return the descriptor as a JSON object (dict), leaving out empty optional fields."""
        obj: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            obj["urls"] = list(self.urls)
        if self.annotations:
            obj["annotations"] = dict(self.annotations)
        if self.platform is not None:
            obj["platform"] = dict(self.platform)
        return obj

    @classmethod
    def from_json(cls, obj: Any, where: str = "descriptor") -> "Descriptor":
        """Build a descriptor from a JSON object; raise RemoteProtocolError naming `where`."""
        if not isinstance(obj, dict):
            raise RemoteProtocolError(f"{where} is not a JSON object")
        media_type = _string(obj, "mediaType", where)
        digest = _string(obj, "digest", where)
        try:
            check_digest(digest)
        except InvalidArgument as exc:
            raise RemoteProtocolError(f"{where}: {exc}") from None
        size = obj.get("size")
        if type(size) is not int or size < 0:
            raise RemoteProtocolError(f"{where}.size is not a non-negative integer: {size!r}")
        platform = obj.get("platform")
        if platform is not None:
            if not isinstance(platform, dict):
                raise RemoteProtocolError(f"{where}.platform is not an object")
            _string(platform, "os", f"{where}.platform")
            _string(platform, "architecture", f"{where}.platform")
        urls = obj.get("urls", [])
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise RemoteProtocolError(f"{where}.urls is not a list of strings")
        return cls(media_type, digest, size, _annotations(obj, where), platform, urls)


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config and an ordered list of layers."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None


@dataclass(frozen=True)
class Index:
    """An image index (or Docker manifest list): manifests for several platforms or tags."""

    manifests: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)
    media_type: str = OCI_INDEX


def sha256_digest(data: bytes) -> str:
    """Return `sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_manifest(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse and validate a manifest or index; `media_type` is the Content-Type it came with, if any.

    The document's own `mediaType` wins; a known header type that contradicts it is an error.
    Without either, the shape decides (`manifests` means an index, `config` a manifest).
    """
    header = (media_type or "").split(";")[0].strip()
    if header == DOCKER_SCHEMA1 or header.startswith("application/vnd.docker.distribution.manifest.v1"):
        raise RemoteProtocolError("Docker schema 1 manifests are not supported (push with schema 2)")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RemoteProtocolError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("manifest is not a JSON object")
    if obj.get("schemaVersion") != 2:
        raise RemoteProtocolError(f"manifest schemaVersion is {obj.get('schemaVersion')!r}, expected 2")
    declared = obj.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise RemoteProtocolError("manifest mediaType is not a string")
    known_header = header if header in ALL_MANIFEST_TYPES else None
    if declared and known_header and declared != known_header:
        raise RemoteProtocolError(f"manifest says mediaType {declared!r} but was served as {header!r}")
    kind = declared or known_header
    if kind is None:
        kind = OCI_INDEX if "manifests" in obj else OCI_MANIFEST
    if kind in INDEX_TYPES:
        return _parse_index(obj, kind)
    if kind in MANIFEST_TYPES:
        return _parse_image_manifest(obj, kind)
    raise RemoteProtocolError(f"unsupported manifest media type {kind!r}")


def _parse_image_manifest(obj: dict[str, Any], kind: str) -> Manifest:
    config = Descriptor.from_json(obj.get("config"), "manifest.config")
    layers = obj.get("layers")
    if not isinstance(layers, list):
        raise RemoteProtocolError("manifest.layers is missing or not a list")
    subject = obj.get("subject")
    artifact_type = obj.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise RemoteProtocolError("manifest.artifactType is not a string")
    return Manifest(
        media_type=kind,
        config=config,
        layers=[Descriptor.from_json(d, f"manifest.layers[{i}]") for i, d in enumerate(layers)],
        subject=None if subject is None else Descriptor.from_json(subject, "manifest.subject"),
        annotations=_annotations(obj, "manifest"),
        artifact_type=artifact_type,
    )


def _parse_index(obj: dict[str, Any], kind: str) -> Index:
    manifests = obj.get("manifests")
    if not isinstance(manifests, list):
        raise RemoteProtocolError("index.manifests is missing or not a list")
    return Index(
        manifests=[Descriptor.from_json(d, f"index.manifests[{i}]") for i, d in enumerate(manifests)],
        annotations=_annotations(obj, "index"),
        media_type=kind,
    )


def encode(document: Manifest | Index) -> bytes:
    """Return canonical compact JSON for a manifest or an index."""
    obj: dict[str, Any] = {"schemaVersion": 2, "mediaType": document.media_type}
    if isinstance(document, Manifest):
        if document.artifact_type:
            obj["artifactType"] = document.artifact_type
        obj["config"] = document.config.to_json()
        obj["layers"] = [layer.to_json() for layer in document.layers]
        if document.subject is not None:
            obj["subject"] = document.subject.to_json()
    else:
        obj["manifests"] = [m.to_json() for m in document.manifests]
    if document.annotations:
        obj["annotations"] = dict(document.annotations)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def platform_name(platform: dict[str, Any] | None) -> str:
    """Return `os/arch[/variant]` for a descriptor's platform, or `unknown`."""
    if not platform:
        return "unknown"
    parts = [str(platform.get("os", "?")), str(platform.get("architecture", "?"))]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(parts)


def select_platform(index: Index, platform: str) -> Descriptor:
    """Return the first manifest of `index` for `os/arch[/variant]`; NotFound lists what exists.

    Without a variant any variant matches; `arm64` and `arm64/v8` are the same platform, as in
    containerd's platform matcher.
    """
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidArgument(f"malformed platform {platform!r} (expected os/arch[/variant])")
    want_os, want_arch = parts[0], parts[1]
    want_variant = parts[2] if len(parts) == 3 else None
    for descriptor in index.manifests:
        p = descriptor.platform or {}
        if p.get("os") != want_os or p.get("architecture") != want_arch:
            continue
        variant = p.get("variant")
        if want_variant is None or variant == want_variant:
            return descriptor
        if want_arch == "arm64" and {variant, want_variant} <= {None, "v8"}:
            return descriptor
    available = ", ".join(platform_name(d.platform) for d in index.manifests) or "none"
    raise NotFound(f"no manifest for platform {platform} in the index (available: {available})")


def layer_compression(media_type: str) -> str:
    """Return `gzip`, `zstd` or `none` for a layer media type; InvalidArgument for any other."""
    try:
        return _COMPRESSION[media_type]
    except KeyError:
        raise InvalidArgument(
            f"unsupported layer media type {media_type!r} (foreign and non-distributable layers "
            "and artifacts are not image layers lazyfly can read)"
        ) from None


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise RemoteProtocolError(f"{where}.{key} is missing or not a string")
    return value


def _annotations(obj: dict[str, Any], where: str) -> dict[str, str]:
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise RemoteProtocolError(f"{where}.annotations is not an object of strings")
    return dict(annotations)
