"""What a download asks for: the origin URL, the X-Dragonfly settings, and how the task is named.

A DownloadRequest comes from the proxy (headers), from `lazyfly get` and the scheduler (the
common.v2.Download message) and goes to the scheduler in RegisterPeerRequest; `task_id` is the
same on every peer because it follows REFERENCE.md §2 from the same fields.
"""

from dataclasses import dataclass, field
from functools import cached_property

from dragonfly_api import common_pb2

from lazyfly.p2p.task.pieces import piece_count
from lazyfly.p2p.task.task_id import DEFAULT_FILTERED_QUERY_PARAMS, task_id


@dataclass(frozen=True)
class DownloadRequest:
    """One download of `url` through the peer."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()  # sent to the origin on the way back to source
    tag: str = ""
    application: str = ""
    priority: int = 0
    filtered_query_params: tuple[str, ...] = DEFAULT_FILTERED_QUERY_PARAMS
    piece_length: int | None = None
    digest: str | None = None
    need_back_to_source: bool = False
    disable_back_to_source: bool = False
    prefetch: bool = False  # a background download: the prefetch bandwidth limit applies
    header_map: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header_map", dict(self.headers))

    @cached_property
    def task_id(self) -> str:
        """The Dragonfly task id of this download (computed once: a sha256 over the fields)."""
        return task_id(
            self.url,
            tag=self.tag or None,
            application=self.application or None,
            piece_length=self.piece_length,
            filtered_query_params=self.filtered_query_params,
        )

    def to_proto(
        self, content_length: int | None = None, piece_length: int | None = None
    ) -> common_pb2.Download:
        """The common.v2.Download message (with the sizes this peer found, when known)."""
        message = common_pb2.Download(
            url=self.url,
            type=common_pb2.TaskType.STANDARD,
            priority=self.priority,
            filtered_query_params=list(self.filtered_query_params),
            request_header=self.header_map,
            need_back_to_source=self.need_back_to_source,
            disable_back_to_source=self.disable_back_to_source,
            prefetch=self.prefetch,
        )
        if self.tag:
            message.tag = self.tag
        if self.application:
            message.application = self.application
        if self.piece_length is not None:
            message.piece_length = self.piece_length
        if self.digest:
            message.digest = self.digest
        if content_length is not None and piece_length is not None:
            message.actual_content_length = content_length
            message.actual_piece_length = piece_length
            message.actual_piece_count = piece_count(content_length, piece_length)
        return message

    @classmethod
    def from_proto(cls, message: common_pb2.Download) -> "DownloadRequest":
        """The request a common.v2.Download message describes."""
        return cls(
            url=message.url,
            headers=tuple(message.request_header.items()),
            tag=message.tag,
            application=message.application,
            priority=message.priority,
            filtered_query_params=tuple(message.filtered_query_params) or DEFAULT_FILTERED_QUERY_PARAMS,
            piece_length=message.piece_length if message.HasField("piece_length") else None,
            digest=message.digest or None,
            need_back_to_source=message.need_back_to_source,
            disable_back_to_source=message.disable_back_to_source,
            prefetch=message.prefetch,
        )
