"""Error categories ↔ gRPC status codes: the one place a gRPC server or client maps them (STYLE 8).

Rules:
- Rule 1: categories map as containerd's errdefs do (NotFound, AlreadyExists, FailedPrecondition,
  InvalidArgument, Unavailable; Corrupt is DATA_LOSS); anything else is UNKNOWN, which containerd
  reports as an unknown error.
- Rule 2: a code coming back (a client's view) maps to the same categories, so a NOT_FOUND stays
  NotFound on both sides.
"""

import grpc

from lazyfly.errors import (
    AlreadyExists,
    Corrupt,
    FailedPrecondition,
    InvalidArgument,
    LazyflyError,
    NotFound,
    Unavailable,
)

CODE_OF: list[tuple[type[LazyflyError], grpc.StatusCode]] = [
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Corrupt, grpc.StatusCode.DATA_LOSS),
]


def status_code(error: BaseException) -> grpc.StatusCode:
    """The status code for an error (Rule 1)."""
    for category, code in CODE_OF:
        if isinstance(error, category):
            return code
    return grpc.StatusCode.UNKNOWN


def error_from(code: grpc.StatusCode, message: str) -> LazyflyError:
    """The error category for a status code a server sent (Rule 2)."""
    for category, known in CODE_OF:
        if known == code:
            return category(message)
    return LazyflyError(f"{code.name}: {message}")
