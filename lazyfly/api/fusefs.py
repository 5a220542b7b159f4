"""The fusefs daemon's HTTP API: paths, and request/response bodies as dataclasses (nydus `api`).

The daemon (lazyfly.fusefs.api) serves these on a unix socket; the snapshotter and the tests are
clients. Routes:
- `POST   /api/v1/images`       AddImageRequest → 201 ImageInfo; 409 if the id is taken;
- `GET    /api/v1/images/{id}`  → 200 ImageInfo;
- `DELETE /api/v1/images/{id}`  → 204;
- `GET    /api/v1/images/{id}/accessed` → 200 AccessedFiles: files read so far, in first-read
                                  order (a prefetch list for `lazyfly build/convert --prefetch-list`);
- `GET    /api/v1/daemon`       → 200 DaemonInfo;
- `POST   /api/v1/cache/gc`     → 200 CacheGcResult: cache files of blobs no image reads deleted;
- `GET    /metrics`             → Prometheus text;
- any failure                   → 4xx/5xx ApiError {error: category, message}.

Rules:
- Rule 1 (pure): no I/O here; `to_json` returns plain data for `json.dumps`, `from_json` takes
  what `json.loads` returned.
- Rule 2 (strict): `from_json` refuses unknown keys, wrong types and values outside a field's
  range with InvalidArgument naming the key (lazyfly.config Rules 1-3), so a typo in a client is
  an error, never a silently ignored setting. Omitted keys take the defaults below.
- Rule 3 (compatibility): new fields get defaults, so older clients keep working.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote

from lazyfly.config import from_mapping, to_mapping
from lazyfly.errors import InvalidArgument
from lazyfly.prefetch_list import PrefetchEntry

IMAGES_PATH = "/api/v1/images"
DAEMON_PATH = "/api/v1/daemon"
CACHE_GC_PATH = "/api/v1/cache/gc"
ACCESSED_SUFFIX = "/accessed"
METRICS_PATH = "/metrics"
DEFAULT_MERGE_LIMIT = 1 << 20
DEFAULT_READ_AHEAD = 64 << 20  # the largest window read ahead of a file read sequentially

BackendKind = Literal["auto", "local", "registry", "proxy"]
PrefetchMode = Literal["none", "table", "all"]


def session_socket_path(api_socket: Path) -> Path:
    """The socket beside the API's where the daemon hands out its /dev/fuse descriptor (root only)."""
    return api_socket.with_name(api_socket.name + ".session")


def image_path(image_id: str) -> str:
    """The path of one image's resource."""
    return f"{IMAGES_PATH}/{quote(image_id, safe='')}"


def accessed_path(image_id: str) -> str:
    """The path of the list of files an image's readers have read."""
    return image_path(image_id) + ACCESSED_SUFFIX


def parse_json(body: bytes, where: str) -> object:
    """Decode a JSON body; InvalidArgument naming `where` if it is not UTF-8 JSON."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"{where}: not valid JSON: {exc}") from exc


class _Model:
    """JSON conversion shared by every model (Rule 2)."""

    def to_json(self) -> dict[str, Any]:
        """Return this model as plain data for json.dumps."""
        data: dict[str, Any] = to_mapping(self)
        return data

    @classmethod
    def from_json(cls, data: object, where: str = "request body") -> Self:
        """Build the model from what json.loads returned; InvalidArgument on any mismatch."""
        model = from_mapping(cls, data, where)
        model.check(where)
        return model

    def check(self, where: str) -> None:
        """Refuse values that type checking lets through (ranges); nothing by default."""


@dataclass
class BackendSpec(_Model):
    """Where an image's blobs come from (see `lazyfly mount --backend`)."""

    kind: BackendKind = "auto"
    proxy_url: str | None = None
    plain_http: bool = False


@dataclass
class PrefetchSpec(_Model):
    """What the daemon fetches before it is read, and how fast."""

    mode: PrefetchMode = "table"
    files: list[str] = field(default_factory=list)
    bandwidth: int = 0  # bytes per second; 0 means no cap
    workers: int = 2

    def check(self, where: str) -> None:
        """Bandwidth is not negative and at least one worker runs."""
        if self.bandwidth < 0:
            raise InvalidArgument(f"{where}: prefetch.bandwidth: {self.bandwidth} is negative")
        if self.workers < 1:
            raise InvalidArgument(f"{where}: prefetch.workers: {self.workers} is not at least 1")


@dataclass
class AddImageRequest(_Model):
    """Serve the image `reference` (as the CLI takes it) in the mount's subdirectory `id`."""

    id: str
    reference: str
    backend: BackendSpec = field(default_factory=BackendSpec)
    prefetch: PrefetchSpec = field(default_factory=PrefetchSpec)
    merge_limit: int = DEFAULT_MERGE_LIMIT
    read_ahead: int = DEFAULT_READ_AHEAD  # bytes; 0: no read-ahead
    slot: int = 0  # where the image's inodes live; 0: the next free slot (a takeover restores it)

    def check(self, where: str) -> None:
        """The id and reference are not empty, the merge limit is positive, the read-ahead and the
        slot are not negative."""
        if not self.id:
            raise InvalidArgument(f"{where}: id: empty")
        if not self.reference:
            raise InvalidArgument(f"{where}: reference: empty")
        if self.merge_limit <= 0:
            raise InvalidArgument(f"{where}: merge_limit: {self.merge_limit} is not positive")
        if self.read_ahead < 0:
            raise InvalidArgument(f"{where}: read_ahead: {self.read_ahead} is negative")
        if self.slot < 0:
            raise InvalidArgument(f"{where}: slot: {self.slot} is negative")
        self.prefetch.check(where)


@dataclass
class CacheStats(_Model):
    """Read and cache counters of one image, summed over its blobs."""

    cache_hits: int = 0
    cache_misses: int = 0
    bytes_fetched: int = 0
    prefetch_bytes: int = 0
    digest_failures: int = 0
    backend_errors: int = 0
    cache_full_events: int = 0
    inflight: int = 0


@dataclass
class ImageInfo(_Model):
    """One served image: its id (the subdirectory), reference, data blobs and counters."""

    id: str
    reference: str
    backend: str
    blobs: list[str] = field(default_factory=list)
    cache: CacheStats = field(default_factory=CacheStats)
    slot: int = 0


@dataclass
class DaemonInfo(_Model):
    """The daemon: lifecycle state, version, mountpoint and served images."""

    state: str
    version: str
    mountpoint: str
    images: list[ImageInfo] = field(default_factory=list)


@dataclass
class AccessedFiles(_Model):
    """The absolute paths of the files of an image read so far, in the order first read, and for
    those not read whole, the byte ranges [offset, length] of the chunks read."""

    paths: list[str] = field(default_factory=list)
    ranges: dict[str, list[list[int]]] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: list[PrefetchEntry]) -> Self:
        """The body listing `entries`."""
        ranges = {e.path: [list(span) for span in e.ranges] for e in entries if e.ranges is not None}
        return cls([e.path for e in entries], ranges)

    def entries(self) -> list[PrefetchEntry]:
        """The files as prefetch-list entries."""
        spans = {path: tuple((offset, length) for offset, length in r) for path, r in self.ranges.items()}
        return [PrefetchEntry(path, spans.get(path)) for path in self.paths]


@dataclass
class CacheGcResult(_Model):
    """What a cache collection deleted: the blobs' digests, the disk space freed, and the manifest
    digests of the images whose bootstraps went."""

    removed: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    bootstraps: list[str] = field(default_factory=list)

    def summary(self) -> str | None:
        """What was deleted, for a log line; None when nothing was."""
        if not self.removed and not self.bootstraps:
            return None
        return f"{len(self.removed)} blobs and {len(self.bootstraps)} bootstraps, {self.freed_bytes} bytes"


@dataclass
class ApiError(_Model):
    """A failure: `error` is the category (NotFound, AlreadyExists, ...), `message` names the subject."""

    error: str
    message: str
