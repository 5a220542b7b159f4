"""The builder's errors, each under a core category so every transport maps them the same way."""

from lazyfly.errors import Corrupt, InvalidArgument


class SourceError(InvalidArgument):
    """The source tree, tarball or image cannot be turned into an image (names the entry)."""


class UnsafeTarEntry(SourceError):
    """A tar entry escapes the tree (`..`, absolute path) or repeats an earlier entry."""


class BrokenLayer(Corrupt):
    """A layer's compressed stream or tar structure is damaged (names the layer)."""
