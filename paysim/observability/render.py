"""The two line formats, fast for the common event.

JSON lines are written by orjson, as structlog's performance recipe has it:
compact (``{"event":"rpc","ms":1.2}``, no space after ``:`` and ``,``), ASCII
only, NaN and infinities as ``null`` (``json.dumps`` wrote the invalid
``NaN`` and ``Infinity``); what orjson refuses goes through the standard
library's encoder, in the same layout. Values JSON has no type for are
written as structlog's ``JSONRenderer`` wrote them (``__structlog__()``, else
repr), datetimes and dataclasses included.

Console lines: a paysim line is a flat event (the "rpc" line, one per call,
is the one that counts). For such an event ``console_line`` writes the same
characters as ``ConsoleRenderer(colors=False)`` (timestamp, ``[level    ]``,
the event padded to 30, then the other keys sorted, ``key=value``) at a sixth
of its cost; for anything it leaves (a traceback, a stack, a logger column)
it returns ``None`` and the caller uses ``ConsoleRenderer``. The differential
tests in ``tests/unit/observability/test_render.py`` hold both to that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

_EVENT_WIDTH = 30  # ConsoleRenderer's default padding of the event
_LEVEL_WIDTH = len("exception")  # the longest level name ConsoleRenderer knows
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# ConsoleRenderer prints a text value with repr() when it holds one of these.
_NEEDS_REPR = re.compile(r"[ \t=\r\n\"']")
_CONSOLE_COLUMNS = frozenset({"timestamp", "level", "event", "logger", "logger_name"})
# ConsoleRenderer's own columns and the texts it appends (its column "" comes first).
_CONSOLE_SPECIAL = frozenset({"stack", "exception", "exc_info", "logger", "logger_name", ""})

# Left to ``default`` (its repr, as before), not written as orjson would write them.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def _not_json(value: Any) -> Any:
    """What JSON has no type for, as structlog's ``JSONRenderer`` writes it: what its
    ``__structlog__()`` returns, else its repr."""
    method = getattr(value, "__structlog__", None)
    return method() if callable(method) else repr(value)


def _u_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code > 0xFFFF:  # a surrogate pair, as json.dumps writes it
        code -= 0x10000
        return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"
    return f"\\u{code:04x}"


def json_line(event: Mapping[Any, Any]) -> str:
    """``event`` as one compact JSON object, ASCII only: a non-ASCII character
    (only ever inside a string) as its ``\\u`` escape. What orjson refuses (an
    integer past 64 bits, a key that is not text, a lone surrogate, nesting past
    its limit) the standard library's encoder writes, in the same layout."""
    try:
        line = orjson.dumps(event, default=_not_json, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(event, default=_not_json, separators=(",", ":"))
    return line if line.isascii() else _NON_ASCII.sub(_u_escape, line)


def render_json(_: Any, __: str, event: Mapping[str, Any]) -> str:
    """``json_line`` as a structlog processor: the renderer of library records."""
    return json_line(event)


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
