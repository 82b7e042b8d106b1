"""structlog setup: JSON lines in production, readable console output elsewhere.

Follows structlog's performance recipe: a filtering bound logger (a disabled
level costs one method call), loggers cached on first use, output written
straight to stdout. Request fields are bound with ``structlog.contextvars``
(each gRPC call runs in its own task, so bindings never leak between calls).
A last line of defence drops values under keys that name secrets.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = frozenset(
    {"card_number", "cvv", "secret", "webhook_secret", "client_secret", "password", "authorization"}
)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _SECRET_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def configure(level: str = "info", json: bool = False, stream: Any = None) -> None:
    out = stream if stream is not None else sys.stdout
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    if json:
        processors += [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    # Libraries that use the standard library (purerpc, httpx, boto3) log warnings and up.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
