"""The two line formats, fast for the common event and identical to structlog's.

A log line of paysim's own is a flat event: text, numbers, booleans, ``None``
(the "rpc" line, one per call, is the one that counts). For such an event the
renderers here write the same characters as structlog's ``JSONRenderer``
(over ``json.JSONEncoder``, ASCII only, ``", "`` and ``": "``) and
``ConsoleRenderer(colors=False)`` (timestamp, ``[level    ]``, the event
padded to 30, then the other keys sorted, ``key=value``), at a quarter and a
sixth of their cost. Anything else (a nested value, a float that JSON has no
number for, an exception or a stack to print, a ``logger`` column) returns
``None``, and the caller renders the event with structlog's own renderer, so
the output is the same whatever the event. The differential tests in
``tests/unit/observability/test_render.py`` hold the two to that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

_EVENT_WIDTH = 30  # ConsoleRenderer's default padding of the event
_LEVEL_WIDTH = len("exception")  # the longest level name ConsoleRenderer knows
# ConsoleRenderer prints a text value with repr() when it holds one of these.
_NEEDS_REPR = re.compile(r"[ \t=\r\n\"']")
_CONSOLE_COLUMNS = frozenset({"timestamp", "level", "event", "logger", "logger_name"})
# ConsoleRenderer's own columns and the texts it appends (its column "" comes first).
_CONSOLE_SPECIAL = frozenset({"stack", "exception", "exc_info", "logger", "logger_name", ""})
_NOT_JSON_NUMBERS = frozenset({"nan", "inf", "-inf"})
_CACHE_MAX = 512  # encoded keys kept: log keys are a small closed set, but never grow unbounded

_json_keys: dict[str, str] = {}  # '"key": ' for each key seen


def json_line(event: Mapping[str, Any]) -> str | None:
    """``event`` as ``json.dumps`` writes it, or None if it is not flat and plain."""
    parts: list[str] = []
    append = parts.append
    for key, value in event.items():
        head = _json_keys.get(key)
        if head is None:
            if type(key) is not str:
                return None
            head = encode_basestring_ascii(key) + ": "
            if len(_json_keys) < _CACHE_MAX:
                _json_keys[key] = head
        if isinstance(value, str):
            append(head + encode_basestring_ascii(value))
            continue
        kind = type(value)
        if kind is float:
            text = repr(value)
            if text in _NOT_JSON_NUMBERS:  # JSONEncoder writes NaN, Infinity
                return None
        elif kind is int:
            text = repr(value)
        elif value is None:
            text = "null"
        elif value is True:
            text = "true"
        elif value is False:
            text = "false"
        else:
            return None
        append(head + text)
    return "{" + ", ".join(parts) + "}"


def console_line(event: Mapping[str, Any]) -> str | None:
    """``event`` as ``ConsoleRenderer(colors=False)`` writes it, or None when it
    carries what only that renderer prints (a traceback, a stack, a logger name)."""
    timestamp = event.get("timestamp")
    level = event.get("level")
    name = event.get("event")
    if (
        type(timestamp) is not str
        or not timestamp
        or type(level) is not str
        or type(name) is not str
        or not _CONSOLE_SPECIAL.isdisjoint(event)
    ):
        return None
    head = f"{timestamp} [{level.ljust(_LEVEL_WIDTH)}] {name.ljust(_EVENT_WIDTH)}"
    rest = [key for key in event if key not in _CONSOLE_COLUMNS]
    if not rest:
        return head.rstrip(" ")
    if not all(type(key) is str for key in rest):
        return None
    pairs = [head]
    for key in sorted(rest):
        value = event[key]
        if isinstance(value, str) and _NEEDS_REPR.search(value) is None:
            pairs.append(key + "=" + value)  # a str subclass's text, as ConsoleRenderer writes it
        else:
            pairs.append(f"{key}={value!r}")
    return " ".join(pairs).rstrip(" ")
