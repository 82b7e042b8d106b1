"""The domain error tree. Every error paysim raises on purpose is one of these.

    PaysimError
    ├── InvalidArgument        a request field is wrong; names the field
    ├── NotFound               no such payment (or not yours: we do not reveal which)
    ├── IdempotencyConflict    the key was used before with other parameters
    ├── FailedPrecondition     the payment is in a state that does not allow this
    │   └── IllegalTransition  the state machine refused a status change
    ├── Overloaded             too much pending work; retry later
    └── Unavailable            the process is shutting down
        └── StoreUnavailable   the shared store (Redis) did not answer in time

The domain and the service raise these; each edge (gRPC, HTTP) translates them
once, with a table, into its own codes. Messages are written for the caller:
they never contain a repr, a stack trace or a secret.
"""

from __future__ import annotations


class PaysimError(Exception):
    """Base of every error raised on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(PaysimError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(PaysimError):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} not found: {ident}")


class IdempotencyConflict(PaysimError):
    def __init__(self, key: str, *, in_progress: bool = False) -> None:
        if in_progress:
            super().__init__(
                f"idempotency conflict: a request with key {key!r} is still in progress; retry"
            )
        else:
            super().__init__(
                f"idempotency conflict: key {key!r} was already used with different parameters"
            )


class FailedPrecondition(PaysimError):
    pass


class IllegalTransition(FailedPrecondition):
    def __init__(self, current: str, requested: str) -> None:
        super().__init__(f"payment is {current}; it cannot become {requested}")
        self.current = current
        self.requested = requested


class Overloaded(PaysimError):
    pass


class Unavailable(PaysimError):
    pass


class StoreUnavailable(Unavailable):
    def __init__(self) -> None:
        super().__init__("the payment store is unavailable; retry")
