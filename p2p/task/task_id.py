"""Dragonfly v2 task ids (pure): the same download gets the same id on every peer and scheduler.

Recipe (dragonfly client `task_id`): lowercase hex sha256 of url ‖ tag ‖ application ‖ revision ‖
decimal(piece_length) ‖ "STANDARD", absent parts adding nothing. Before hashing, the query
parameters named in `filtered_query_params` are dropped from the url (and the `?` with them when
none remain), so presigned URLs of one object share a task.
"""

import hashlib
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

TASK_TYPE_STANDARD = "STANDARD"

# Signature keys of S3, GCS, OSS, OBS and COS presigned URLs, and `ns`.
DEFAULT_FILTERED_QUERY_PARAMS = (
    "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
    "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-User-Agent",
    "X-Goog-Algorithm", "X-Goog-Credential", "X-Goog-Date", "X-Goog-Expires", "X-Goog-SignedHeaders",
    "X-Goog-Signature",
    "OSSAccessKeyId", "Expires", "Signature", "security-token",
    "AccessKeyId", "x-obs-security-token",
    "q-sign-algorithm", "q-ak", "q-sign-time", "q-key-time", "q-header-list", "q-url-param-list",
    "q-signature", "x-cos-security-token",
    "ns",
)  # fmt: skip


def filter_query_params(url: str, filtered: Iterable[str]) -> str:
    """`url` without the query parameters named in `filtered` (order of the others kept)."""
    names = set(filtered)
    parts = urlsplit(url)
    if not parts.query or not names:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def task_id(
    url: str,
    *,
    tag: str | None = None,
    application: str | None = None,
    revision: str | None = None,
    piece_length: int | None = None,
    filtered_query_params: Iterable[str] = DEFAULT_FILTERED_QUERY_PARAMS,
) -> str:
    """The task id of a download of `url` with these parameters."""
    text = filter_query_params(url, filtered_query_params)
    text += tag or ""
    text += application or ""
    text += revision or ""
    text += str(piece_length) if piece_length is not None else ""
    text += TASK_TYPE_STANDARD
    return hashlib.sha256(text.encode()).hexdigest()
