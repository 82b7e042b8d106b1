"""What the EventBridge publisher sends: entries, batches, and why a call failed.

Pure data and rules, no I/O: the size of an entry as PutEvents counts it, the
limits of one call (``MAX_BATCH_ENTRIES``, ``MAX_BATCH_BYTES``), the buffered
``Entry`` and the ``Batch`` one sender owns until every entry in it is
published, and ``classify``, which names a failed call's reason for the
``paysim_events_failed_attempts_total{reason}`` series (every reason is retried).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024

_THROTTLING = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
    }
)
TRANSIENT = frozenset({"throttled", "connection", "timeout", "server"})


def entry_size(entry: dict[str, Any]) -> int:
    """An entry's size as PutEvents counts it (UTF-8 bytes), plus its bus name."""
    size = sum(len(str(entry.get(key, "")).encode()) for key in ("Source", "DetailType", "Detail"))
    size += len(str(entry.get("EventBusName", "")).encode())
    size += sum(len(r.encode()) for r in entry.get("Resources", ()))
    if entry.get("Time") is not None:
        size += 14
    return size


def classify(exc: Exception) -> str:
    """A failed call's reason label; every reason is retried."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if error.get("Code") in _THROTTLING or status == 429:
            return "throttled"
        if status >= 500:
            return "server"
        return "rejected"
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return "connection"
    if isinstance(exc, BotoCoreError):
        return "rejected"  # e.g. NoCredentialsError, ParamValidationError
    return "error"


@dataclass(slots=True)
class Entry:
    payment_id: str
    event_id: str
    entry: dict[str, Any]
    size: int
    enqueued_at: float


@dataclass(eq=False, slots=True)
class Batch:
    entries: list[Entry]
    done: trio.Event = field(default_factory=trio.Event)
    # The entries of ``entries`` not yet published (its sender updates it).
    unpublished: list[Entry] = field(default_factory=list)
