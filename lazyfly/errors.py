"""Error categories shared by every role.

Rule: each transport (gRPC, HTTP, FUSE errno, CLI exit) maps these categories in exactly one
module; a role's own errors subclass one of them, and every message names its subject.
"""


class LazyflyError(Exception):
    """Base of every error lazyfly raises on purpose."""


class NotFound(LazyflyError):
    """The named thing (image, blob, snapshot, task, file) does not exist."""


class AlreadyExists(LazyflyError):
    """The named thing exists already and may not be created again."""


class FailedPrecondition(LazyflyError):
    """The request is valid but the current state does not allow it."""


class InvalidArgument(LazyflyError):
    """The caller gave input that can never be valid (bad flag, malformed reference, unsafe tar)."""


class Unavailable(LazyflyError):
    """A remote party (registry, peer, daemon) did not answer usefully; retrying may help."""


class Corrupt(LazyflyError):
    """Stored or received bytes fail their checksum or structure: never serve them."""


class LocalProtocolError(LazyflyError):
    """We tried to encode something the protocol or format does not allow: our own bug."""


class RemoteProtocolError(Corrupt):
    """The bytes we were given break the protocol or format: a lying or broken peer or file."""
