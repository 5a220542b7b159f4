"""Registry client for the OCI distribution API, on httpx + anyio (runs under trio and asyncio).

Rules kept:

- Rule 1: HTTP answers and transport failures become lazyfly error categories in exactly one place,
  `_error_for` and `_send`: 404 is NotFound, 401/403 AuthenticationFailed, 5xx and connection
  failures (after retries) Unavailable, malformed answers RemoteProtocolError; each message names
  the registry, the repository and the blob or tag.
- Rule 2: idempotent calls (GET, HEAD) are retried with exponential backoff on connection errors,
  5xx and 429, at most `tries` times; uploads are not, since a half-done upload is not repeatable.
- Rule 3: everything fetched by digest is verified (sha256, size) before it is returned or renamed
  into place; a download streams into a temp file beside its destination, so a complete-looking
  file is always a verified one.
- Rule 4: registries redirect blob GETs to storage; redirects are followed, and httpx drops the
  Authorization header when the host changes, so registry credentials never reach the storage host.

The constructor takes httpx timeouts (per network operation, not per call); callers bound whole
calls with their own `fail_after`, as STYLE rule 7 asks.
"""

import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType

import anyio
import httpx

from lazyfly.errors import Corrupt, LazyflyError, NotFound, RemoteProtocolError, Unavailable
from lazyfly.oci.auth import AuthenticationFailed, RegistryAuth
from lazyfly.oci.manifest import (
    ALL_MANIFEST_TYPES,
    Descriptor,
    Index,
    Manifest,
    parse_manifest,
    select_platform,
)
from lazyfly.oci.reference import check_digest
from lazyfly.range_sink import SINK_EXTENSION, RangeSink, feed, range_length

DEFAULT_REGISTRY_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_TRIES = 4
_BACKOFF_FIRST = 0.25
_BACKOFF_MAX = 4.0
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_CHUNK = 1 << 20
_ERROR_BODY_MAX = 2048
_HUB_ENDPOINT = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}

Progress = Callable[[int], object]


def registry_endpoint(registry: str) -> str:
    """Return the host that serves the API for `registry` (Docker Hub's name is not its API host)."""
    return _HUB_ENDPOINT.get(registry, registry)


def _hasher(digest: str) -> "hashlib._Hash":
    algo = check_digest(digest).partition(":")[0]
    if algo not in ("sha256", "sha512"):
        raise RemoteProtocolError(f"cannot verify digest {digest}: unsupported algorithm {algo}")
    return hashlib.new(algo)


def _verify(digest: str, data: bytes, what: str) -> None:
    h = _hasher(digest)
    h.update(data)
    if f"{h.name}:{h.hexdigest()}" != digest:
        raise RemoteProtocolError(f"{what}: content does not match its digest {digest}")


class RegistryClient:
    """A client for one registry; use as `async with RegistryClient(host) as client:`."""

    def __init__(
        self,
        registry: str,
        *,
        plain_http: bool = False,
        auth: RegistryAuth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeouts: httpx.Timeout = DEFAULT_REGISTRY_TIMEOUT,
        tries: int = DEFAULT_TRIES,
    ) -> None:
        self.registry = registry
        scheme = "http" if plain_http else "https"
        self.base_url = f"{scheme}://{registry_endpoint(registry)}"
        self.tries = max(1, tries)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            auth=auth,
            transport=transport,
            timeout=timeouts,
            follow_redirects=True,
            # identity: byte ranges and lengths must refer to the blob's stored bytes, not a re-encoding.
            headers={"User-Agent": "lazyfly", "Accept-Encoding": "identity"},
        )

    async def __aenter__(self) -> "RegistryClient":
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    # --- the one place where HTTP becomes lazyfly errors ----------------------------------------

    async def _send(
        self,
        method: str,
        url: str | httpx.URL,
        what: str,
        *,
        idempotent: bool = True,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
        allow_404: bool = False,
        **kwargs: object,
    ) -> httpx.Response | None:
        """Send with retries and map failures; return the response, or None for an allowed 404."""
        tries = self.tries if idempotent else 1
        for attempt in range(tries):
            last = attempt == tries - 1
            try:
                request = self._client.build_request(method, url, **kwargs)
                response = await self._client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if last:
                    raise Unavailable(
                        f"registry {self.registry} did not answer {method} for {what} after "
                        f"{attempt + 1} tries: {type(exc).__name__}: {exc or 'no detail'}"
                    ) from exc
                await anyio.sleep(self._backoff(attempt, None))
                continue
            if response.status_code in ok:
                return response
            body = b""
            try:
                if method != "HEAD":
                    body = (await response.aread())[:_ERROR_BODY_MAX]
            except httpx.TransportError:
                body = b""
            finally:
                await response.aclose()
            if response.status_code == 404 and allow_404:
                return None
            if response.status_code in _RETRY_STATUSES and not last:
                await anyio.sleep(self._backoff(attempt, response.headers.get("Retry-After")))
                continue
            raise self._error_for(response.status_code, body, method, what, attempt + 1)
        raise AssertionError("unreachable: the last try returns or raises")

    def _error_for(self, status: int, body: bytes, method: str, what: str, tries: int) -> LazyflyError:
        detail = body.decode(errors="replace").strip()
        suffix = f": {detail}" if detail else ""
        if status == 404:
            return NotFound(f"{what} not found in registry {self.registry}{suffix}")
        if status in (401, 403):
            return AuthenticationFailed(
                f"registry {self.registry} refused {method} of {what} ({status}){suffix}"
            )
        if status >= 500 or status == 429:
            return Unavailable(
                f"registry {self.registry} failed {method} of {what} with {status} "
                f"after {tries} tries{suffix}"
            )
        return RemoteProtocolError(
            f"registry {self.registry} answered {status} to {method} of {what}{suffix}"
        )

    @staticmethod
    def _backoff(attempt: int, retry_after: str | None) -> float:
        delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2**attempt)
        if retry_after and retry_after.isdigit():
            delay = min(_BACKOFF_MAX * 4, max(delay, float(retry_after)))
        return delay

    async def _stream_body(self, response: httpx.Response, what: str) -> AsyncIterator[bytes]:
        """Yield body chunks, turning a connection lost mid-body into Unavailable."""
        try:
            async for chunk in response.aiter_bytes(_CHUNK):
                yield chunk
        except httpx.TransportError as exc:
            raise Unavailable(f"registry {self.registry} broke off sending {what}: {exc!r}") from exc

    # --- manifests -----------------------------------------------------------------------------

    async def get_manifest(
        self, repo: str, reference: str, accept: tuple[str, ...] = ALL_MANIFEST_TYPES
    ) -> tuple[bytes, str, str]:
        """Return (bytes, media type, sha256 digest) of a manifest; verify it if asked by digest."""
        what = f"manifest {repo}:{reference}" if ":" not in reference else f"manifest {repo}@{reference}"
        response = await self._send(
            "GET", f"/v2/{repo}/manifests/{reference}", what, headers={"Accept": ", ".join(accept)}
        )
        assert response is not None
        data = response.content
        if ":" in reference:
            _verify(reference, data, what)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise RemoteProtocolError(
                f"{what}: registry {self.registry} claims digest {claimed}, content is {digest}"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return data, media_type, digest

    async def get_image_manifest(
        self, repo: str, reference: str, platform: str
    ) -> tuple[Manifest, Descriptor, bytes]:
        """Return the image manifest for `platform` (through an index if there is one), its
        descriptor and its bytes."""
        data, media_type, digest = await self.get_manifest(repo, reference)
        document = parse_manifest(data, media_type)
        if isinstance(document, Index):
            chosen = select_platform(document, platform)
            data, media_type, digest = await self.get_manifest(repo, chosen.digest)
            document = parse_manifest(data, media_type or chosen.media_type)
        if not isinstance(document, Manifest):
            raise RemoteProtocolError(f"{repo}:{reference}: the index for {platform} points to another index")
        return document, Descriptor(document.media_type, digest, len(data)), data

    async def head_manifest(
        self, repo: str, reference: str, accept: tuple[str, ...] = ALL_MANIFEST_TYPES
    ) -> Descriptor | None:
        """Return a manifest's descriptor (from headers only), or None if the registry lacks it."""
        what = f"manifest {repo}:{reference}"
        response = await self._send(
            "HEAD",
            f"/v2/{repo}/manifests/{reference}",
            what,
            headers={"Accept": ", ".join(accept)},
            allow_404=True,
        )
        if response is None:
            return None
        digest = response.headers.get("Docker-Content-Digest") or (reference if ":" in reference else None)
        try:
            size = int(response.headers["Content-Length"])
            check_digest(digest or "")
        except (KeyError, ValueError, LazyflyError):
            raise RemoteProtocolError(
                f"{what}: registry {self.registry} sent no usable digest or length"
            ) from None
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return Descriptor(media_type, digest, size)  # type: ignore[arg-type]

    async def push_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """Upload a manifest under a tag or digest; return its sha256 digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ":" in reference and reference != digest:
            raise RemoteProtocolError(
                f"manifest for {repo}@{reference} has digest {digest}: refusing to push"
            )
        what = f"manifest {repo}:{reference}"
        response = await self._send(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            what,
            idempotent=True,  # same bytes to the same name: repeating it is harmless
            ok=(200, 201),
            content=data,
            headers={"Content-Type": media_type},
        )
        assert response is not None
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise RemoteProtocolError(
                f"{what}: registry {self.registry} stored digest {claimed}, we sent {digest}"
            )
        return digest

    # --- blobs ---------------------------------------------------------------------------------

    def blob_url(self, repo: str, digest: str) -> str:
        """Return the absolute URL of a blob (for a range reader or a peer's back-to-source)."""
        return f"{self.base_url}/v2/{repo}/blobs/{check_digest(digest)}"

    async def head_blob(self, repo: str, digest: str) -> int | None:
        """Return the size of a blob, or None if the registry does not have it."""
        what = f"blob {digest} of {repo}"
        response = await self._send("HEAD", self.blob_url(repo, digest), what, allow_404=True)
        if response is None:
            return None
        try:
            return int(response.headers["Content-Length"])
        except (KeyError, ValueError):
            raise RemoteProtocolError(f"{what}: registry {self.registry} sent no Content-Length") from None

    async def get_blob(self, repo: str, digest: str) -> bytes:
        """Return a whole (small) blob, verified against its digest."""
        what = f"blob {digest} of {repo}"
        response = await self._send("GET", self.blob_url(repo, digest), what)
        assert response is not None
        _verify(digest, response.content, what)
        return response.content

    async def get_blob_range(self, repo: str, digest: str, start: int, length: int) -> bytes:
        """Return `length` bytes of a blob from `start` (a 206, or a 200 we slice)."""
        if start < 0 or length < 0:
            raise ValueError(f"bad range start={start} length={length}")
        if length == 0:
            return b""
        return await self._get_range(repo, digest, start, length, None)

    async def get_blob_range_into(self, repo: str, digest: str, start: int, sink: RangeSink) -> None:
        """Deliver the bytes of a blob from `start` into `sink` (range_sink.py): straight from the
        socket when the transport can (threaded_transport.py, Rule 6), else from the whole answer."""
        length = range_length(sink)
        if start < 0:
            raise ValueError(f"bad range start={start} length={length}")
        if length:
            data = await self._get_range(repo, digest, start, length, sink)
            if data is not None:
                await anyio.to_thread.run_sync(feed, sink, data)

    async def _get_range(
        self, repo: str, digest: str, start: int, length: int, sink: RangeSink | None
    ) -> bytes | None:
        """One ranged GET; its body, or None when the transport delivered it into `sink`."""
        what = f"bytes {start}-{start + length - 1} of blob {digest} of {repo}"
        headers = {"Range": f"bytes={start}-{start + length - 1}"}
        extensions = {} if sink is None else {SINK_EXTENSION: sink}
        response = await self._send(
            "GET", self.blob_url(repo, digest), what, ok=(200, 206), headers=headers, extensions=extensions
        )
        assert response is not None
        if response.status_code == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {start}-"):
                raise RemoteProtocolError(
                    f"{what}: registry {self.registry} sent Content-Range {content_range!r}"
                )
            if response.extensions.get(SINK_EXTENSION):
                return None
        data = response.content
        if response.status_code == 200:
            data = data[start : start + length]
        if len(data) != length:
            raise RemoteProtocolError(f"{what}: registry {self.registry} sent {len(data)} bytes")
        return data

    async def download_blob(
        self, repo: str, digest: str, dest: Path, progress: Progress | None = None, *, size: int | None = None
    ) -> None:
        """Stream a blob into `dest` through a temp file beside it, verified before the rename."""
        what = f"blob {digest} of {repo}"
        hasher = _hasher(digest)
        temp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
        response = await self._send("GET", self.blob_url(repo, digest), what, stream=True)
        assert response is not None
        received = 0
        expected = size if size is not None else _content_length(response)
        try:
            async with await anyio.open_file(temp, "wb") as out:
                async for chunk in self._stream_body(response, what):
                    hasher.update(chunk)
                    await out.write(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            await response.aclose()
            if expected is not None and received != expected:
                raise RemoteProtocolError(f"{what}: received {received} bytes, expected {expected}")
            if f"{hasher.name}:{hasher.hexdigest()}" != digest:
                raise RemoteProtocolError(f"{what}: downloaded content does not match its digest")
            os.replace(temp, dest)
        finally:
            await response.aclose()
            temp.unlink(missing_ok=True)

    async def push_blob(
        self, repo: str, digest: str, size: int, path: Path, progress: Progress | None = None
    ) -> bool:
        """Upload the file at `path` as a blob unless the registry has it; return True if uploaded."""
        what = f"blob {digest} of {repo}"
        if await self.head_blob(repo, digest) == size:
            if progress is not None:
                progress(size)
            return False
        response = await self._send(
            "POST", f"/v2/{repo}/blobs/uploads/", f"upload of {what}", idempotent=False, ok=(202,)
        )
        assert response is not None
        location = response.headers.get("Location")
        if not location:
            raise RemoteProtocolError(f"upload of {what}: registry {self.registry} sent no Location")
        upload_url = response.url.join(location).copy_merge_params({"digest": digest})
        response = await self._send(
            "PUT",
            upload_url,
            f"upload of {what}",
            idempotent=False,
            ok=(201,),
            content=_file_chunks(path, progress),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        assert response is not None
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise Corrupt(f"upload of {what}: registry {self.registry} computed digest {claimed}")
        return True


def _content_length(response: httpx.Response) -> int | None:
    if response.headers.get("Content-Encoding", "identity") != "identity":
        return None  # the length of the encoded body, not of the blob: the digest still checks it
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


async def _file_chunks(path: Path, progress: Progress | None) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        while chunk := await f.read(_CHUNK):
            if progress is not None:
                progress(len(chunk))
            yield chunk
