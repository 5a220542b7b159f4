"""open_backend: pick and build the BlobBackend for an image location (the `--backend` flag).

Rules kept:

- Rule 1: `auto` means `local` for a layout on disk (a Path or `oci:PATH`), `proxy` for a registry
  image when a proxy URL is given, else `registry`. A daemon-wide proxy URL does not stop local
  images from opening, so `auto` ignores it for a layout.
- Rule 2: impossible combinations are InvalidArgument naming what was asked: `local` for a
  registry image, `registry` or `proxy` for a layout, `proxy` without a proxy URL, an explicit
  `local` or `registry` with a proxy URL, or an unknown kind.
- Rule 3: a `proxy` backend falls back to a `registry` backend for the same image; it owns it.
- Rule 4: building does no I/O: backends connect (and read the Docker config) on their first read.
"""

from pathlib import Path
from typing import Literal

from lazyfly.backend.base import BlobBackend
from lazyfly.backend.oci_layout import OciLayoutBackend
from lazyfly.backend.peer_proxy import PeerProxyBackend
from lazyfly.backend.registry import RegistryBackend
from lazyfly.errors import InvalidArgument
from lazyfly.oci.locate import ImageLocation
from lazyfly.oci.reference import OciLayoutRef, RegistryRef

BackendKind = Literal["auto", "local", "registry", "proxy"]
BACKEND_KINDS: tuple[str, ...] = ("auto", "local", "registry", "proxy")


def open_backend(
    kind: BackendKind | str,
    location: ImageLocation,
    *,
    proxy_url: str | None = None,
    plain_http: bool = False,
) -> BlobBackend:
    """Return the backend of `kind` for `location` (see the module rules)."""
    if kind not in BACKEND_KINDS:
        raise InvalidArgument(f"unknown backend {kind!r} for {location} (choose one of {BACKEND_KINDS})")
    if isinstance(location, Path | OciLayoutRef):
        path = location.path if isinstance(location, OciLayoutRef) else location
        if kind not in ("auto", "local"):
            raise InvalidArgument(f"backend {kind!r} cannot read the local OCI layout {path}")
        if kind == "local" and proxy_url:
            raise InvalidArgument(f"a proxy URL makes no sense for the local OCI layout {path}")
        return OciLayoutBackend(path)
    if not isinstance(location, RegistryRef):
        raise InvalidArgument(f"cannot open a blob backend for {location!r}: not an image location")
    if kind == "local":
        raise InvalidArgument(
            f"backend 'local' needs an OCI layout on disk, not the registry image {location}"
        )
    if kind == "registry" and proxy_url:
        raise InvalidArgument(
            f"backend 'registry' reads {location} directly: drop the proxy URL or use 'proxy'"
        )
    if kind == "proxy" and not proxy_url:
        raise InvalidArgument(f"backend 'proxy' for {location} needs a proxy URL")
    registry = RegistryBackend(location, plain_http=plain_http)
    if proxy_url:
        return PeerProxyBackend(proxy_url, location, fallback=registry, plain_http=plain_http)
    return registry
