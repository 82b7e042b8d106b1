"""The gRPC edge's error table: domain errors become gRPC statuses here, once.

Anything not in the table is a bug: the client gets INTERNAL with a generic
message, and the log gets the traceback (``transport.py`` does that).
"""

from __future__ import annotations

from purerpc.grpclib.status import Status, StatusCode

from paysim import errors


class RpcError(Exception):
    """Raised inside a handler to end the call with this status (already safe to show)."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = Status(code, message)


_TABLE: tuple[tuple[type[errors.PaysimError], StatusCode], ...] = (
    (errors.InvalidArgument, StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, StatusCode.NOT_FOUND),
    (errors.IdempotencyConflict, StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, StatusCode.FAILED_PRECONDITION),
    (errors.Overloaded, StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, StatusCode.UNAVAILABLE),
)

INTERNAL_MESSAGE = "internal error; the server has logged the details"


def status_for(exc: BaseException) -> Status | None:
    """The status a known error maps to, or None for an unexpected exception."""
    if isinstance(exc, RpcError):
        return exc.status
    if isinstance(exc, errors.PaysimError):
        for kind, code in _TABLE:
            if isinstance(exc, kind):
                return Status(code, exc.message)
    return None
