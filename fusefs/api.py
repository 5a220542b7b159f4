"""The fusefs daemon's HTTP API (lazyfly.api.fusefs): routes requests to ServedImages and metrics.

The transport is lazyfly.http_unix; this module only routes, decodes bodies into the shared models,
calls ServedImages, and encodes the answer.

Rules:
- Rule 1 (one error map): error categories become HTTP statuses here and nowhere else (`STATUS_OF`,
  first match wins): MethodNotAllowed 405, InvalidArgument 400, NotFound 404, AlreadyExists 409,
  FailedPrecondition 409, Unavailable 502 (503 while the daemon is not RUNNING), Corrupt 502 (a
  bad image or a lying registry); anything else is 500 and logged. Every error body is an
  ApiError whose message names its subject (the image id or reference).
- Rule 2: a request is refused before any work when its body does not decode (400), its path is
  unknown (404) or its method does not fit the path (405 with Allow).
- Rule 3: the image settings of an add come from the request only, checked by the same loader as
  the YAML config (lazyfly.config), so the API and the config file accept the same keys.
"""

import json
import logging
from urllib.parse import unquote, urlsplit

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from lazyfly import __version__
from lazyfly.api.fusefs import (
    ACCESSED_SUFFIX,
    CACHE_GC_PATH,
    DAEMON_PATH,
    IMAGES_PATH,
    METRICS_PATH,
    AccessedFiles,
    AddImageRequest,
    ApiError,
    CacheStats,
    DaemonInfo,
    ImageInfo,
    parse_json,
)
from lazyfly.config import from_mapping, to_mapping
from lazyfly.errors import (
    AlreadyExists,
    Corrupt,
    FailedPrecondition,
    InvalidArgument,
    LazyflyError,
    NotFound,
    Unavailable,
)
from lazyfly.fusefs.config import ImageSettings
from lazyfly.fusefs.image import MountedImage
from lazyfly.fusefs.metrics import render, total_stats
from lazyfly.fusefs.served_images import ServedImages
from lazyfly.http_unix import Headers
from lazyfly.oci.locate import locate_image

log = logging.getLogger(__name__)

JSON = [("Content-Type", "application/json")]
Response = tuple[int, Headers, bytes]


class MethodNotAllowed(FailedPrecondition):
    """The path exists but does not take this method (answered with 405 and Allow)."""

    def __init__(self, method: str, allowed: list[str], path: str) -> None:
        super().__init__(f"{method} is not allowed on {path} (allowed: {', '.join(allowed)})")
        self.allowed = allowed


STATUS_OF: list[tuple[type[LazyflyError], int]] = [
    (MethodNotAllowed, 405),
    (InvalidArgument, 400),
    (NotFound, 404),
    (AlreadyExists, 409),
    (FailedPrecondition, 409),
    (Unavailable, 502),
    (Corrupt, 502),
]


def status_of(error: LazyflyError, daemon_running: bool = True) -> int:
    """The HTTP status of an error category (Rule 1)."""
    if isinstance(error, Unavailable) and not daemon_running:
        return 503
    for category, status in STATUS_OF:
        if isinstance(error, category):
            return status
    return 500


def image_info(image: MountedImage) -> ImageInfo:
    """The API view of one served image."""
    stats = total_stats(image)
    cache = CacheStats(**{name: getattr(stats, name) for name in CacheStats.__dataclass_fields__})
    blobs = [blob.digest for blob in image.bootstrap.blobs()]
    return ImageInfo(image.image_id, image.reference, image.backend.name, blobs, cache, image.slot)


def image_settings(request: AddImageRequest) -> ImageSettings:
    """The ImageSettings an add asks for (Rule 3)."""
    data = {
        "backend": to_mapping(request.backend),
        "prefetch": to_mapping(request.prefetch),
        "merge_limit": request.merge_limit,
        "read_ahead": request.read_ahead,
    }
    return from_mapping(ImageSettings, data, f"image {request.id}")


class ApiRoutes:
    """The HTTP handler of one daemon: `handle` is given to lazyfly.http_unix.serve_unix."""

    def __init__(self, images: ServedImages, registry: CollectorRegistry) -> None:
        self.images = images
        self.registry = registry

    async def handle(self, method: str, target: str, headers: Headers, body: bytes) -> Response:
        """Answer one request; errors become ApiError bodies (Rule 1)."""
        try:
            return await self._route(method, urlsplit(target).path, body)
        except LazyflyError as exc:
            status = status_of(exc, self.images.lifecycle.accepts_images)
            if status >= 500:
                log.warning("%s %s: %s", method, target, exc)
            status, headers, payload = _json(status, ApiError(type(exc).__name__, str(exc)).to_json())
            if isinstance(exc, MethodNotAllowed):
                headers = [*headers, ("Allow", ", ".join(exc.allowed))]
            return status, headers, payload

    async def _route(self, method: str, path: str, body: bytes) -> Response:
        if path.startswith(IMAGES_PATH + "/") and path.endswith(ACCESSED_SUFFIX):
            image_id = unquote(path[len(IMAGES_PATH) + 1 : -len(ACCESSED_SUFFIX)])
            _allow(method, ["GET"], path)
            image = self.images.get(image_id)
            if image is None:
                raise NotFound(f"image {image_id} is not mounted")
            entries = await trio.to_thread.run_sync(image.accessed.entries, image.bootstrap)
            return _json(200, AccessedFiles.of(entries).to_json())
        if path == IMAGES_PATH:
            _allow(method, ["POST"], path)
            return await self._add(body)
        if path.startswith(IMAGES_PATH + "/") and "/" not in path[len(IMAGES_PATH) + 1 :]:
            image_id = unquote(path[len(IMAGES_PATH) + 1 :])
            _allow(method, ["GET", "DELETE"], path)
            if method == "DELETE":
                await self.images.remove(image_id)
                return 204, [], b""
            image = self.images.get(image_id)
            if image is None:
                raise NotFound(f"image {image_id} is not mounted")
            return _json(200, image_info(image).to_json())
        if path == DAEMON_PATH:
            _allow(method, ["GET"], path)
            info = DaemonInfo(
                self.images.lifecycle.state.value,
                __version__,
                str(self.images.mountpoint),
                [image_info(image) for image in self.images],
            )
            return _json(200, info.to_json())
        if path == CACHE_GC_PATH:
            _allow(method, ["POST"], path)
            return _json(200, (await self.images.collect_cache()).to_json())
        if path == METRICS_PATH:
            _allow(method, ["GET"], path)
            return 200, [("Content-Type", CONTENT_TYPE_LATEST)], render(self.registry)
        raise NotFound(f"no API resource at {path}")

    async def _add(self, body: bytes) -> Response:
        image = await add_image(self.images, AddImageRequest.from_json(parse_json(body, "request body")))
        return _json(201, image_info(image).to_json())


async def add_image(images: ServedImages, request: AddImageRequest) -> MountedImage:
    """Serve the image an add request names, with the settings it carries (Rule 3)."""
    return await images.add(
        request.id, locate_image(request.reference), image_settings(request), request.slot
    )


def _allow(method: str, allowed: list[str], path: str) -> None:
    if method not in allowed:
        raise MethodNotAllowed(method, allowed, path)


def _json(status: int, data: object) -> Response:
    return status, JSON, json.dumps(data).encode()
