"""The peer's proxy handler: which requests go through P2P, and how a P2P answer is streamed.

Rules:
- Rule 1: the origin URL is the absolute target, or for a registry-mirror request (origin-form
  `/v2/...`) the registry named in X-Dragonfly-Registry (or the configured default) plus the
  target. Requests headers.py's rules do not send through P2P are forwarded as they are.
- Rule 2: a P2P GET is a task download (headers.py reads the X-Dragonfly-* settings); headers the
  origin must see (Authorization, Accept...) travel with it, hop-by-hop, Range and X-Dragonfly-*
  ones do not. The answer carries X-Dragonfly-Task-ID.
- Rule 3: with one Range, only the pieces under it are downloaded (first) and the answer is 206 with
  Content-Range, the bytes streamed in order as the pieces land; with X-Dragonfly-Prefetch: true
  the rest of the task is downloaded in the background too (once per task: the manager's Rule 1).
  Without Range the whole task is streamed with 200.
- Rule 4: a malformed X-Dragonfly-* or Range header is 400, a range past the end 416, both with
  X-Dragonfly-Error-Type: proxy; an origin that fails before the answer starts is 502 with type
  backend (a client like fusefs then reads that range elsewhere). A failure mid-body cuts the
  connection: the client sees a short body, never wrong bytes.
"""

import dataclasses
import logging
from collections.abc import AsyncIterator

import anyio
import httpx

from lazyfly.errors import InvalidArgument, LazyflyError
from lazyfly.p2p.download.manager import TaskManager
from lazyfly.p2p.download.progress import TaskProgress
from lazyfly.p2p.download.request import DownloadRequest
from lazyfly.p2p.metrics import PeerMetrics
from lazyfly.p2p.proxy.headers import (
    ERROR_TYPE_BACKEND,
    ERROR_TYPE_PROXY,
    TASK_ID,
    ByteRange,
    ProxyRules,
    RangeNotSatisfiable,
    download_options,
    parse_range,
)
from lazyfly.p2p.proxy.http_server import ProxyRequest, ProxyResponse, error_response
from lazyfly.p2p.proxy.passthrough import HOP_BY_HOP, forward
from lazyfly.p2p.task.pieces import piece

log = logging.getLogger(__name__)
READ_SIZE = 1 << 20


class ProxyRouter:
    """Answers proxy requests through `manager` (P2P) or `client` (pass-through)."""

    def __init__(
        self,
        manager: TaskManager,
        client: httpx.AsyncClient,
        rules: ProxyRules,
        metrics: PeerMetrics,
        default_registry: str | None = None,
    ) -> None:
        self.manager = manager
        self.client = client
        self.rules = rules
        self.metrics = metrics
        self.default_registry = default_registry

    async def handle(self, request: ProxyRequest) -> ProxyResponse:
        """The answer to one proxy request (Rules 1-4)."""
        headers = dict(request.headers)
        try:
            options = download_options(headers)
        except InvalidArgument as exc:
            return self._count("p2p", error_response(400, str(exc), ERROR_TYPE_PROXY))
        url = request.target
        if url.startswith("/"):
            registry = options.registry or self.default_registry
            if registry is None:
                return self._count(
                    "passthrough", error_response(400, f"{url}: no registry to mirror", ERROR_TYPE_PROXY)
                )
            url = registry.rstrip("/") + url
        if not self.rules.use_p2p(request.method, url, options):
            return self._count(
                "passthrough", await forward(self.client, dataclasses.replace(request, target=url))
            )
        download = DownloadRequest(
            url=url,
            headers=tuple(_origin_headers(request.headers)),
            tag=options.tag,
            application=options.application,
            priority=options.priority,
            filtered_query_params=options.filtered_query_params,
            piece_length=options.piece_length,
        )
        return self._count("p2p", await self._p2p(download, request.header("Range"), options.prefetch))

    async def _p2p(self, download: DownloadRequest, range_value: str | None, prefetch: bool) -> ProxyResponse:
        task = {TASK_ID: download.task_id}
        try:
            progress = await self.manager.download(download, None if range_value is None else set())
            assert progress.content_length is not None and progress.piece_length is not None
            if range_value is None:
                wanted = ByteRange(0, progress.content_length - 1)
            else:
                wanted = parse_range(range_value, progress.content_length)
                numbers = set(
                    range(wanted.start // progress.piece_length, wanted.end // progress.piece_length + 1)
                )
                await self.manager.download(download, numbers)
                if prefetch:
                    await self.manager.download(dataclasses.replace(download, prefetch=True), None)
        except RangeNotSatisfiable as exc:
            headers = [("Content-Range", f"bytes */{progress.content_length}"), *task.items()]
            return error_response(416, str(exc), ERROR_TYPE_PROXY, headers)
        except InvalidArgument as exc:
            return error_response(400, str(exc), ERROR_TYPE_PROXY, list(task.items()))
        except LazyflyError as exc:
            return error_response(502, str(exc), ERROR_TYPE_BACKEND, list(task.items()))
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Accept-Ranges", "bytes"),
            ("Content-Length", str(max(0, wanted.length))),
            *task.items(),
        ]
        status = 200
        if range_value is not None:
            status = 206
            headers.append(("Content-Range", wanted.content_range(progress.content_length)))
        progress.readers += 1

        async def release() -> None:
            progress.readers -= 1

        body = _stream(self.manager, progress, wanted) if wanted.length > 0 else b""
        return ProxyResponse(status, headers, body, close=release)

    def _count(self, route: str, response: ProxyResponse) -> ProxyResponse:
        self.metrics.proxy_requests.labels(route, str(response.status)).inc()
        return response


async def _stream(manager: TaskManager, progress: TaskProgress, wanted: ByteRange) -> AsyncIterator[bytes]:
    """The bytes of `wanted`, in order, each piece once it is stored."""
    assert progress.content_length is not None and progress.piece_length is not None
    path = manager.store.content.path(progress.task_id)
    for number in range(wanted.start // progress.piece_length, wanted.end // progress.piece_length + 1):
        await progress.wait_piece(number)
        one = piece(number, progress.content_length, progress.piece_length)
        position, end = max(wanted.start, one.offset), min(wanted.end + 1, one.offset + one.length)
        while position < end:
            size = min(READ_SIZE, end - position)
            data = await anyio.to_thread.run_sync(
                manager.store.content.read, progress.task_id, position, size
            )
            if len(data) != size:
                raise OSError(f"{path}: short read at {position}")
            yield data
            position += size


def _origin_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    skipped = HOP_BY_HOP | {"host", "range", "content-length", "accept-encoding"}
    return [
        (key, value)
        for key, value in headers
        if key.lower() not in skipped and not key.lower().startswith(("x-dragonfly-", "proxy-"))
    ]
