"""What the peer's proxy reads from a request and writes into its answer (pure).

Rules:
- Rule 1 (P2P or not): a GET goes through P2P when its URL matches one of the proxy's rules
  (default `blobs/sha256.*`) or it carries `X-Dragonfly-Use-P2P: true`; anything else passes through.
- Rule 2 (X-Dragonfly-*): Tag, Application, Priority (0–6), Filtered-Query-Params (`&`- or
  `,`-separated names), Piece-Length (≥ 4 MiB), Registry (the origin of a registry-mirror request),
  Use-P2P and Prefetch (`true`/`false`); a malformed value is InvalidArgument naming the header.
- Rule 3 (Range): one range per request (`bytes=a-b`, `bytes=a-`, `bytes=-n`); several ranges are
  InvalidArgument; a range outside the content is RangeNotSatisfiable (answered 416).
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lazyfly.errors import FailedPrecondition, InvalidArgument
from lazyfly.p2p.task.pieces import MIN_PIECE_LENGTH
from lazyfly.p2p.task.task_id import DEFAULT_FILTERED_QUERY_PARAMS

TAG = "X-Dragonfly-Tag"
APPLICATION = "X-Dragonfly-Application"
PRIORITY = "X-Dragonfly-Priority"
FILTERED_QUERY_PARAMS = "X-Dragonfly-Filtered-Query-Params"
PIECE_LENGTH = "X-Dragonfly-Piece-Length"
REGISTRY = "X-Dragonfly-Registry"
USE_P2P = "X-Dragonfly-Use-P2P"
PREFETCH = "X-Dragonfly-Prefetch"
TASK_ID = "X-Dragonfly-Task-ID"
ERROR_TYPE = "X-Dragonfly-Error-Type"
ERROR_TYPE_BACKEND, ERROR_TYPE_PROXY = "backend", "proxy"
DEFAULT_RULES = (r"blobs/sha256.*",)
MAX_PRIORITY = 6
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(FailedPrecondition):
    """The range lies outside the content (answered 416 with `Content-Range: bytes */TOTAL`)."""


@dataclass(frozen=True)
class DownloadOptions:
    """The X-Dragonfly-* settings of one proxied request."""

    tag: str = ""
    application: str = ""
    priority: int = 0
    filtered_query_params: tuple[str, ...] = DEFAULT_FILTERED_QUERY_PARAMS
    piece_length: int | None = None
    registry: str | None = None
    use_p2p: bool = False
    prefetch: bool = False


@dataclass(frozen=True)
class ByteRange:
    """Bytes `start` to `end`, both included."""

    start: int
    end: int

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        """The Content-Range header of a 206 answer."""
        return f"bytes {self.start}-{self.end}/{total}"


@dataclass
class ProxyRules:
    """Which URLs go through P2P (Rule 1)."""

    patterns: Sequence[str] = field(default_factory=lambda: list(DEFAULT_RULES))

    def __post_init__(self) -> None:
        try:
            self._compiled = [re.compile(pattern) for pattern in self.patterns]
        except re.error as exc:
            raise InvalidArgument(f"proxy rule: bad regular expression: {exc}") from exc

    def use_p2p(self, method: str, url: str, options: DownloadOptions) -> bool:
        """Whether this request is downloaded through P2P."""
        if method != "GET":
            return False
        return options.use_p2p or any(pattern.search(url) for pattern in self._compiled)


def _get(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value.strip()
    return None


def _flag(headers: Mapping[str, str], name: str) -> bool:
    value = _get(headers, name)
    if value is None or value == "":
        return False
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidArgument(f"{name}: {value!r} is not true or false")


def download_options(headers: Mapping[str, str]) -> DownloadOptions:
    """The X-Dragonfly-* settings of a request (Rule 2)."""
    priority_text = _get(headers, PRIORITY)
    priority = 0
    if priority_text:
        if not priority_text.isdigit() or int(priority_text) > MAX_PRIORITY:
            raise InvalidArgument(f"{PRIORITY}: {priority_text!r} is not a priority from 0 to {MAX_PRIORITY}")
        priority = int(priority_text)
    piece_length = None
    length_text = _get(headers, PIECE_LENGTH)
    if length_text:
        if not length_text.isdigit() or int(length_text) < MIN_PIECE_LENGTH:
            raise InvalidArgument(
                f"{PIECE_LENGTH}: {length_text!r} is not a length of at least {MIN_PIECE_LENGTH}"
            )
        piece_length = int(length_text)
    filtered_text = _get(headers, FILTERED_QUERY_PARAMS)
    filtered = DEFAULT_FILTERED_QUERY_PARAMS
    if filtered_text:
        filtered = tuple(name for name in re.split(r"[&,]", filtered_text) if name.strip())
    return DownloadOptions(
        tag=_get(headers, TAG) or "",
        application=_get(headers, APPLICATION) or "",
        priority=priority,
        filtered_query_params=filtered,
        piece_length=piece_length,
        registry=_get(headers, REGISTRY) or None,
        use_p2p=_flag(headers, USE_P2P),
        prefetch=_flag(headers, PREFETCH),
    )


def parse_range(value: str, content_length: int) -> ByteRange:
    """The one byte range a Range header asks for, within `content_length` (Rule 3)."""
    if "," in value:
        raise InvalidArgument(f"Range {value!r}: only one range per request")
    match = _RANGE.match(value.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise InvalidArgument(f"Range {value!r}: expected bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX")
    first, last = match.group(1), match.group(2)
    if first == "":
        suffix = int(last)
        if suffix == 0 or content_length == 0:
            raise RangeNotSatisfiable(f"Range {value!r}: nothing to send of {content_length} bytes")
        return ByteRange(max(0, content_length - suffix), content_length - 1)
    start = int(first)
    end = content_length - 1 if last == "" else min(int(last), content_length - 1)
    if last != "" and int(last) < start:
        raise InvalidArgument(f"Range {value!r}: the last byte is before the first")
    if start >= content_length:
        raise RangeNotSatisfiable(f"Range {value!r}: starts past the end of {content_length} bytes")
    return ByteRange(start, end)
