"""PeerProxyBackend: blob ranges through a Dragonfly-style peer's HTTP proxy, falling back to the registry.

Requests: `GET <scheme>://<registry>/v2/<repo>/blobs/<digest>` sent in absolute form to the HTTP
proxy at `proxy_url`, with `Range: bytes=a-b`, `X-Dragonfly-Registry: <scheme>://<registry>` (the
origin) and, on on-demand reads only, `X-Dragonfly-Prefetch: true`, so the peer fetches the rest of
the blob in the background while it serves the range (prefetch reads already cover what they want).
Registry credentials (RegistryAuth, from the Docker config) travel in the Authorization header,
which the proxy passes through to the origin; a 401 from the origin is answered with a fresh token.
An https registry is reached through a CONNECT tunnel, which a peer can only serve by terminating
TLS itself; plain-HTTP registries are sent in absolute form that every peer proxy understands.

Rules kept:

- Rule 1: answers are exact: a 206 whose Content-Range starts at the offset and has the asked
  length, or a 200 that is sliced; a range past the end of the blob is NotFound (byte_range Rule 2).
- Rule 2: with a `fallback` backend, a read tries the proxy once (bounded by `attempt_timeout`).
  When the proxy is unreachable, times out, or answers 407 or 5xx other than
  `X-Dragonfly-Error-Type: backend`, the proxy is "down": this read and every read for the next
  `cooldown` seconds go to the fallback (counted in `stats.fallbacks`), one warning is logged per
  outage, and the first read after the cool-down tries the proxy again (an info line when it is
  back). A 5xx of type `backend` (the origin failed behind the peer) sends only that read to the
  fallback. NotFound, authentication and protocol errors are final and never fall back.
- Rule 3: without a fallback, the proxy is retried like a registry (retry.py): Unavailable within
  tries × attempt_timeout + backoff.
- Rule 4: the backend owns its fallback: `aclose` closes it too.
- Rule 5: a read feeds its RangeSink from the proxy's whole answer (in a worker thread; httpx's
  own transport reads it), or lets the fallback deliver into it.
"""

import logging

import anyio
import httpx

from lazyfly.backend.base import BlobBackend
from lazyfly.backend.byte_range import check_range, describe, parse_content_range, past_end, range_header
from lazyfly.backend.lazy_client import LazyClient
from lazyfly.backend.retry import (
    DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_PREFETCH_TRIES,
    DEFAULT_TRIES,
    RetryPolicy,
    retrying,
)
from lazyfly.backend.stats import BackendStats, counted
from lazyfly.errors import InvalidArgument, NotFound, RemoteProtocolError, Unavailable
from lazyfly.oci.auth import AuthenticationFailed, RegistryAuth
from lazyfly.oci.reference import RegistryRef
from lazyfly.oci.registry import DEFAULT_REGISTRY_TIMEOUT, registry_endpoint
from lazyfly.range_sink import RangeSink, feed, range_length

log = logging.getLogger(__name__)

DEFAULT_PROXY_COOLDOWN = 30.0
PREFETCH_HEADER = "X-Dragonfly-Prefetch"
REGISTRY_HEADER = "X-Dragonfly-Registry"
ERROR_TYPE_HEADER = "X-Dragonfly-Error-Type"


class ProxyDown(Unavailable):
    """The peer proxy itself failed (unreachable, refused us, or broke), not the origin behind it."""


class PeerProxyBackend:
    """Reads blob ranges of `ref.repository` on `ref.registry` through the proxy at `proxy_url`."""

    name = "proxy"

    def __init__(
        self,
        proxy_url: str,
        ref: RegistryRef,
        *,
        fallback: BlobBackend | None,
        plain_http: bool = False,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        tries: int = DEFAULT_TRIES,
        prefetch_tries: int = DEFAULT_PREFETCH_TRIES,
        cooldown: float = DEFAULT_PROXY_COOLDOWN,
        auth: RegistryAuth | None = None,
    ) -> None:
        url = httpx.URL(proxy_url) if "://" in proxy_url else None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise InvalidArgument(f"bad peer proxy URL {proxy_url!r} (expected http://HOST:PORT)")
        self.proxy_url = proxy_url
        self.ref = ref
        self.fallback = fallback
        self.origin = f"{'http' if plain_http else 'https'}://{registry_endpoint(ref.registry)}"
        self.on_demand = RetryPolicy(tries=tries, attempt_timeout=attempt_timeout)
        self.prefetch = RetryPolicy(tries=prefetch_tries, attempt_timeout=attempt_timeout)
        self.cooldown = cooldown
        self.stats = BackendStats()
        self._auth = auth
        self._client = LazyClient(repr(self), self._make_client)
        self._down_until = float("-inf")
        self._outage = False

    def __repr__(self) -> str:
        return f"PeerProxyBackend({self.proxy_url} -> {self.origin}/{self.ref.repository})"

    async def read_range_into(
        self, digest: str, offset: int, sink: RangeSink, *, prefetch: bool = False
    ) -> None:
        """Deliver the bytes of blob `digest` from `offset` into `sink`: the proxy's whole answer
        (Rule 5), or the fallback's delivery."""
        length = range_length(sink)
        check_range(digest, offset, length)
        if length == 0:
            return
        await counted(self.stats, lambda: self._read(digest, offset, length, sink, prefetch), length)

    async def _read(self, digest: str, offset: int, length: int, sink: RangeSink, prefetch: bool) -> None:
        client = await self._client.get(digest)
        policy = self.prefetch if prefetch else self.on_demand

        async def attempt() -> None:
            data = await self.try_read_range(client, digest, offset, length, prefetch=prefetch)
            await anyio.to_thread.run_sync(feed, sink, data)

        if self.fallback is None:
            what = f"{describe(digest, offset, length)} through peer proxy {self.proxy_url}"
            await retrying(policy, attempt, what, self.stats)
            return
        if anyio.current_time() >= self._down_until:
            try:
                with anyio.fail_after(policy.attempt_timeout):
                    await attempt()
            except TimeoutError:
                self._mark_down(f"no answer within {policy.attempt_timeout} s")
            except ProxyDown as exc:
                self._mark_down(str(exc))
            except Unavailable as exc:
                log.info("peer proxy %s: %s; reading this range from %s", self.proxy_url, exc, self.fallback)
            else:
                self._mark_up()
                return
        self.stats.fallbacks += 1
        await self.fallback.read_range_into(digest, offset, sink, prefetch=prefetch)

    def _mark_down(self, why: str) -> None:
        self._down_until = anyio.current_time() + self.cooldown
        if not self._outage:
            self._outage = True
            log.warning(
                "peer proxy %s is down (%s): reading from %s, trying the proxy again in %s s",
                self.proxy_url,
                why,
                self.fallback,
                self.cooldown,
            )

    def _mark_up(self) -> None:
        if self._outage:
            self._outage = False
            log.info("peer proxy %s answers again", self.proxy_url)

    async def try_read_range(
        self, client: httpx.AsyncClient, digest: str, offset: int, length: int, *, prefetch: bool = False
    ) -> bytes:
        """Make one request through the proxy (no retries, no timeout, no fallback)."""
        what = f"{describe(digest, offset, length)} of {self.ref.repository}"
        headers = {"Range": range_header(offset, length), REGISTRY_HEADER: self.origin}
        if not prefetch:
            headers[PREFETCH_HEADER] = "true"
        url = f"{self.origin}/v2/{self.ref.repository}/blobs/{digest}"
        try:
            response = await client.get(url, headers=headers)
        except httpx.TransportError as exc:
            raise ProxyDown(f"peer proxy {self.proxy_url} failed {what}: {exc!r}") from exc
        return self._body_of(response, digest, offset, length, what)

    def _body_of(self, response: httpx.Response, digest: str, offset: int, length: int, what: str) -> bytes:
        status, body = response.status_code, response.content
        via = f"peer proxy {self.proxy_url}"
        if status == 200:
            if len(body) < offset + length:
                raise past_end(digest, offset, length, len(body))
            return body[offset : offset + length]
        if status == 206:
            first, last, total = parse_content_range(response.headers.get("Content-Range", ""))
            if first == offset and last - first + 1 < length and total is not None and total == last + 1:
                raise past_end(digest, offset, length, total)
            if first != offset or last - first + 1 != length or len(body) != length:
                raise RemoteProtocolError(
                    f"{what}: {via} sent Content-Range {response.headers['Content-Range']!r} "
                    f"and {len(body)} bytes"
                )
            return body
        if status == 416:
            value = response.headers.get("Content-Range", "")
            size = value.rpartition("/")[2]
            if value.startswith("bytes */") and size.isdigit():
                raise past_end(digest, offset, length, int(size))
            raise NotFound(f"{what}: past the end of the blob ({via} answered 416)")
        if status == 404:
            raise NotFound(f"{what}: not found in {self.origin} ({via} answered 404)")
        if status in (401, 403):
            raise AuthenticationFailed(f"{what}: {self.origin} refused us ({status}) via {via}")
        error_type = response.headers.get(ERROR_TYPE_HEADER, "")
        if status == 407 or (status >= 500 and error_type != "backend"):
            raise ProxyDown(f"{via} answered {status} ({error_type or 'no error type'}) for {what}")
        if status >= 500 or status == 429:
            raise Unavailable(f"{what}: {self.origin} answered {status} behind {via}")
        raise RemoteProtocolError(f"{what}: {via} answered {status}")

    async def _make_client(self) -> httpx.AsyncClient:
        auth = self._auth or await anyio.to_thread.run_sync(
            RegistryAuth.from_docker_config, self.ref.registry
        )
        return httpx.AsyncClient(
            proxy=self.proxy_url,
            auth=auth,
            timeout=DEFAULT_REGISTRY_TIMEOUT,
            follow_redirects=True,
            trust_env=False,  # the proxy is named explicitly; no environment proxy may replace it
            headers={"User-Agent": "lazyfly", "Accept-Encoding": "identity"},
        )

    async def aclose(self) -> None:
        """Close the proxy connections and the fallback; later reads raise FailedPrecondition."""
        await self._client.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()
