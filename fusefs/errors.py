"""fusefs errors under the core categories."""

from lazyfly.errors import AlreadyExists, FailedPrecondition, NotFound


class ImageNotFound(NotFound):
    """No image with that id is mounted."""


class ImageExists(AlreadyExists):
    """An image with that id is mounted already."""


class MountFailed(FailedPrecondition):
    """The FUSE mount could not be made or did not answer (names the mountpoint)."""
