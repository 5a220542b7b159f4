"""Where a source's file bytes go: the chunker when building, a hasher when checking.

A source (directory or tar) reads each regular file once, in order, and hands its bytes to a
sink; the sink records what it needs on the node. Both sinks share this interface so that the
sources never know whether they feed a build or a comparison.
"""

import hashlib
from typing import BinaryIO, Protocol

from lazyfly.builder.tree import Node


class ContentSink(Protocol):
    """Receives the bytes of each regular file of a layer."""

    def add_file(self, node: Node, stream: BinaryIO, size: int, name: bytes) -> None:
        """Consume exactly `size` bytes of `stream` for `node`, the file at image path `name`."""
        ...

    def add_path(self, node: Node, path: bytes, size: int, name: bytes) -> None:
        """Consume the `size`-byte file at `path` for `node`, the file at image path `name` (now or
        later, in any thread)."""
        ...


class HashingSink:
    """Records the sha256 of each file's content on its node (`content_digest`)."""

    def add_file(self, node: Node, stream: BinaryIO, size: int, name: bytes = b"") -> None:
        """Hash `size` bytes of `stream`."""
        h = hashlib.sha256()
        left = size
        while left:
            data = stream.read(min(left, 1 << 20))
            if not data:
                raise EOFError(f"file content ends {left} bytes early")
            h.update(data)
            left -= len(data)
        node.content_digest = "sha256:" + h.hexdigest()

    def add_path(self, node: Node, path: bytes, size: int, name: bytes = b"") -> None:
        """Hash the file at `path`."""
        with open(path, "rb") as f:
            self.add_file(node, f, size, name)
