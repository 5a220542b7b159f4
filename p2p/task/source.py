"""Back to source: a task's length and its pieces fetched from the origin with HTTP Range requests.

Rules:
- Rule 1: the length comes from HEAD (Content-Length), or from a `bytes=0-0` GET's Content-Range
  when HEAD gives none; an origin that says nothing usable is Unavailable.
- Rule 2: each piece is one `Range: bytes=a-b` GET; an answer that is not 206 for exactly that range,
  or whose body is not exactly the piece's length, is RemoteProtocolError (an origin that returns
  the wrong length is an error, never a short piece).
- Rule 3: `download_from_source` keeps at most `concurrency` requests in flight, taking pieces in
  `order` (a sort key, by number by default, asked again for each piece so urgency can change),
  writes each piece through the piece store (crc32c recorded), tells `on_piece` of each, and marks
  the task finished when all its pieces are stored (a download of some pieces leaves it open).
- Rule 5: an origin that asks for a bearer token gets one through `auth` (lazyfly.oci.auth's
  RegistryAuth answers the challenge), so registry blobs come back to source like plain URLs.
- Rule 4 (STYLE 7): every request runs under DEFAULT_REQUEST_TIMEOUT.
"""

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import anyio
import httpx

from lazyfly.backend.byte_range import parse_content_range, range_header
from lazyfly.errors import LazyflyError, RemoteProtocolError, Unavailable
from lazyfly.p2p.rate_limiter import RateLimiter
from lazyfly.p2p.storage.piece_meta import PieceRecord
from lazyfly.p2p.storage.piece_store import PieceStore
from lazyfly.p2p.task.pieces import Piece, piece_count, pieces

DEFAULT_REQUEST_TIMEOUT = 120.0
DEFAULT_CONCURRENCY = 8


async def content_length(
    client: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str] = {},
    auth: httpx.Auth | None = None,
) -> int:
    """The origin's length of `url` (Rule 1)."""
    extra = {} if auth is None else {"auth": auth}
    try:
        with anyio.fail_after(DEFAULT_REQUEST_TIMEOUT):
            response = await client.head(url, headers=dict(headers), follow_redirects=True, **extra)
            if response.status_code == 200 and response.headers.get("Content-Length", "").isdigit():
                return int(response.headers["Content-Length"])
            response = await client.get(
                url, headers={**headers, "Range": "bytes=0-0"}, follow_redirects=True, **extra
            )
    except (httpx.TransportError, TimeoutError) as exc:
        raise Unavailable(f"origin {url}: no answer: {exc!r}") from exc
    if response.status_code == 206 and "Content-Range" in response.headers:
        total = parse_content_range(response.headers["Content-Range"])[2]
        if total is not None:
            return total
    raise Unavailable(f"origin {url}: answered {response.status_code} without a usable length")


async def fetch_piece(
    client: httpx.AsyncClient,
    url: str,
    piece: Piece,
    headers: Mapping[str, str] = {},
    auth: httpx.Auth | None = None,
) -> bytes:
    """The bytes of `piece` from the origin (Rule 2)."""
    wanted = {**headers, "Range": range_header(piece.offset, piece.length)}
    extra = {} if auth is None else {"auth": auth}
    try:
        with anyio.fail_after(DEFAULT_REQUEST_TIMEOUT):
            response = await client.get(url, headers=wanted, follow_redirects=True, **extra)
    except (httpx.TransportError, TimeoutError) as exc:
        raise Unavailable(f"origin {url}: piece {piece.number}: {exc!r}") from exc
    if response.status_code != 206:
        raise RemoteProtocolError(
            f"origin {url}: piece {piece.number}: answered {response.status_code}, not 206"
        )
    first, last, _ = parse_content_range(response.headers.get("Content-Range", ""))
    if (first, last) != (piece.offset, piece.offset + piece.length - 1) or len(
        response.content
    ) != piece.length:
        raise RemoteProtocolError(
            f"origin {url}: piece {piece.number}: sent bytes {first}-{last} ({len(response.content)} bytes) "
            f"for {piece.offset}-{piece.offset + piece.length - 1}"
        )
    return response.content


async def download_from_source(
    store: PieceStore,
    client: httpx.AsyncClient,
    url: str,
    task_id: str,
    *,
    headers: Mapping[str, str] = {},
    concurrency: int = DEFAULT_CONCURRENCY,
    numbers: Collection[int] | None = None,
    order: Callable[[int], Any] | None = None,
    on_piece: Callable[[PieceRecord], Awaitable[None]] | None = None,
    bandwidth: RateLimiter | None = None,
    auth: httpx.Auth | None = None,
) -> None:
    """Fetch the missing pieces of a registered task (of `numbers`, or all) from the origin (Rule 3)."""
    task = store.meta.task(task_id)
    if task is None:
        raise Unavailable(f"task {task_id} is not registered")
    have = {record.number for record in store.meta.pieces_of(task_id)}
    todo = {
        p.number: p
        for p in pieces(task.content_length, task.piece_length)
        if p.number not in have and (numbers is None or p.number in numbers)
    }
    total = len(have) + len(todo)

    async def worker() -> None:
        while todo:
            piece = todo.pop(min(todo, key=order) if order else min(todo))
            if bandwidth is not None:
                await bandwidth.acquire(piece.length)
            data = await fetch_piece(client, url, piece, headers, auth)
            record = await anyio.to_thread.run_sync(store.write_piece, task_id, piece.number, data)
            if on_piece is not None:
                await on_piece(record)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
    except* LazyflyError as group:  # one failed piece cancels the rest; report the first cause
        raise _first(group) from None
    if total == piece_count(task.content_length, task.piece_length):
        await anyio.to_thread.run_sync(store.finish, task_id)


def _first(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
