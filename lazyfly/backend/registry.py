"""RegistryBackend: ranges of blobs read straight from an OCI registry with HTTP Range requests.

Rules kept:

- Rule 1: one RegistryClient per backend, created on the first read (the Docker config is read in
  a worker thread: a credential helper may block, bounded by its own timeout) and shared by every
  read after it, so connections and Bearer tokens are reused.
- Rule 2: the retries are here, not in the client (it is built with `tries=1`, so they do not
  multiply). On-demand reads get `tries` attempts, prefetch reads `prefetch_tries`; each attempt is
  bounded by `fail_after(attempt_timeout)`, so a dead or stalled registry gives Unavailable within
  `retry.RetryPolicy.bound()`: tries × attempt_timeout + backoff (defaults: 4 × 15 s + 1.4 s
  on-demand, 2 × 15 s + 0.2 s prefetch).
- Rule 3: token refresh is RegistryAuth's job: it renews a cached Bearer token before it expires,
  so a backend that lives for days keeps reading; redirects to blob storage are followed by the
  client (without our Authorization header).
- Rule 4: a range past the end of a blob is NotFound (byte_range Rule 2). Registries answer it
  with 416 or a short 206 (docker-registry's 416 even announces a body longer than it sends), which
  the client reports as a protocol error or Unavailable; only after such a failure does the backend
  ask for the blob's size (HEAD, remembered per digest) to tell "past the end" from a failure, and
  a failure it is not is raised unchanged (and retried if it is Unavailable).
- Rule 5: the client sends through a ThreadedTransport (threaded_transport.py): range bodies move
  on blocking sockets in worker threads, several times faster than httpx's own transport, while
  auth and redirects stay httpx's. A range's body is delivered into its RangeSink piece by piece,
  straight from the socket.
"""

import anyio

from lazyfly.backend.byte_range import check_range, describe, past_end
from lazyfly.backend.lazy_client import LazyClient
from lazyfly.backend.retry import (
    DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_PREFETCH_TRIES,
    DEFAULT_TRIES,
    RetryPolicy,
    retrying,
)
from lazyfly.backend.stats import BackendStats, counted
from lazyfly.backend.threaded_transport import ThreadedTransport
from lazyfly.errors import LazyflyError, RemoteProtocolError, Unavailable
from lazyfly.oci.auth import RegistryAuth
from lazyfly.oci.reference import RegistryRef
from lazyfly.oci.registry import RegistryClient
from lazyfly.range_sink import RangeSink, range_length

__all__ = ["DEFAULT_ATTEMPT_TIMEOUT", "DEFAULT_PREFETCH_TRIES", "DEFAULT_TRIES", "RegistryBackend"]


class RegistryBackend:
    """Reads blob ranges of `ref.repository` from `ref.registry` (tag and digest of `ref` unused)."""

    name = "registry"

    def __init__(
        self,
        ref: RegistryRef,
        *,
        plain_http: bool = False,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        tries: int = DEFAULT_TRIES,
        prefetch_tries: int = DEFAULT_PREFETCH_TRIES,
        auth: RegistryAuth | None = None,
    ) -> None:
        self.ref = ref
        self.plain_http = plain_http
        self.on_demand = RetryPolicy(tries=tries, attempt_timeout=attempt_timeout)
        self.prefetch = RetryPolicy(tries=prefetch_tries, attempt_timeout=attempt_timeout)
        self.stats = BackendStats()
        self._auth = auth
        self._client = LazyClient(repr(self), self._make_client)
        self._sizes: dict[str, int] = {}  # blob sizes learnt by HEAD after a failed read (Rule 4)

    def __repr__(self) -> str:
        return f"RegistryBackend({self.ref.registry}/{self.ref.repository})"

    async def read_range_into(
        self, digest: str, offset: int, sink: RangeSink, *, prefetch: bool = False
    ) -> None:
        """Deliver the bytes of blob `digest` from `offset` into `sink` as they arrive (Rule 5),
        retrying as Rule 2 says (each attempt starts the sink over)."""
        length = range_length(sink)
        check_range(digest, offset, length)
        if length == 0:
            return
        policy = self.prefetch if prefetch else self.on_demand

        async def read() -> None:
            client = await self._client.get(digest)
            what = f"{describe(digest, offset, length)} from {self.ref.registry}/{self.ref.repository}"
            await retrying(
                policy, lambda: self.try_read_range_into(client, digest, offset, sink), what, self.stats
            )

        await counted(self.stats, read, length)

    async def try_read_range_into(
        self, client: RegistryClient, digest: str, offset: int, sink: RangeSink
    ) -> None:
        """Make one attempt at delivering a range into `sink` (no retries, no timeout:
        `read_range_into` adds both)."""
        length = range_length(sink)
        size = self._sizes.get(digest)
        if size is not None and offset + length > size:
            raise past_end(digest, offset, length, size)
        try:
            await client.get_blob_range_into(self.ref.repository, digest, offset, sink)
        except (RemoteProtocolError, Unavailable):
            size = await self._blob_size(client, digest)
            if size is not None and offset + length > size:
                raise past_end(digest, offset, length, size) from None
            raise

    async def _blob_size(self, client: RegistryClient, digest: str) -> int | None:
        """Return the blob's size, or None if the registry cannot say now."""
        try:
            size = await client.head_blob(self.ref.repository, digest)
        except LazyflyError:
            return None
        if size is not None:
            self._sizes[digest] = size
        return size

    async def _make_client(self) -> RegistryClient:
        auth = self._auth or await anyio.to_thread.run_sync(
            RegistryAuth.from_docker_config, self.ref.registry
        )
        return RegistryClient(
            self.ref.registry, plain_http=self.plain_http, auth=auth, tries=1, transport=ThreadedTransport()
        )

    async def aclose(self) -> None:
        """Close the connection pool; later reads raise FailedPrecondition (idempotent)."""
        await self._client.aclose()
