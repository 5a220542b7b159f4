"""A client of the fusefs daemon's HTTP API on its unix socket (lazyfly.api.fusefs), for asyncio.

Rules:
- Rule 1: answers map back to error categories by status (400 InvalidArgument, 404 NotFound,
  409 AlreadyExists, 502/503 Unavailable), with the daemon's message; a daemon that is not there
  is Unavailable.
- Rule 2 (STYLE 7): no timeouts here; callers wrap each call in `anyio.fail_after`.
"""

import json
from pathlib import Path
from types import TracebackType

import httpx

from lazyfly.api.fusefs import (
    CACHE_GC_PATH,
    DAEMON_PATH,
    IMAGES_PATH,
    AddImageRequest,
    ApiError,
    CacheGcResult,
    DaemonInfo,
    ImageInfo,
    image_path,
    parse_json,
)
from lazyfly.errors import AlreadyExists, InvalidArgument, LazyflyError, NotFound, Unavailable

_ERROR_OF_STATUS: dict[int, type[LazyflyError]] = {
    400: InvalidArgument,
    404: NotFound,
    409: AlreadyExists,
    502: Unavailable,
    503: Unavailable,
}


class FusefsClient:
    """Calls to one fusefs daemon; use as `async with FusefsClient(socket) as client:`."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket)), base_url="http://fusefs", timeout=None
        )

    async def __aenter__(self) -> "FusefsClient":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def daemon_info(self) -> DaemonInfo:
        """The daemon's state and images."""
        return DaemonInfo.from_json(await self._call("GET", DAEMON_PATH, 200), "daemon info")

    async def add_image(self, request: AddImageRequest) -> ImageInfo:
        """Serve an image; AlreadyExists if its id is taken."""
        body = await self._call("POST", IMAGES_PATH, 201, request.to_json())
        return ImageInfo.from_json(body, f"image {request.id}")

    async def remove_image(self, image_id: str) -> None:
        """Stop serving an image; NotFound if it is not served."""
        await self._call("DELETE", image_path(image_id), 204)

    async def collect_cache(self) -> CacheGcResult:
        """Have the daemon delete the cache files of blobs no served image reads."""
        return CacheGcResult.from_json(await self._call("POST", CACHE_GC_PATH, 200), "cache gc")

    async def _call(self, method: str, path: str, expected: int, payload: object = None) -> object:
        content = None if payload is None else json.dumps(payload).encode()
        try:
            response = await self._client.request(method, path, content=content)
        except httpx.TransportError as exc:
            raise Unavailable(f"fusefs daemon at {self.socket}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == expected:
            return parse_json(response.content, f"{method} {path}") if response.content else None
        try:
            detail = ApiError.from_json(parse_json(response.content, path), path).message
        except LazyflyError:
            detail = response.text[:200]
        category = _ERROR_OF_STATUS.get(response.status_code, LazyflyError)
        raise category(f"fusefs daemon: {method} {path}: {response.status_code}: {detail}")
