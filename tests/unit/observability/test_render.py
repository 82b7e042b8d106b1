"""The fast line renderers and the scrub pre-check, against what they replace.

Differential tests: ``render.json_line`` against ``json.dumps`` (what
structlog's ``JSONRenderer`` wrote: the same keys, order and values, in a
compact layout), ``render.console_line`` against structlog's
``ConsoleRenderer(colors=False)`` (the same characters), ``_suspect`` against
the full scrub, and a configured logger's lines against those of the six
processors it replaced.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import example, given, settings
from hypothesis import strategies as st

from paysim.observability import logging as paysim_logging
from paysim.observability import render
from paysim.observability.logging import Trusted, configure, scrub


@dataclasses.dataclass
class Point:
    x: int
    y: int


TEXT = st.text(
    st.sampled_from("0123456789 -abcdefABCDEFb'\"=\t\n\r\\é٣€xyz_.:/") | st.characters(),
    max_size=60,
)
PLAIN = (
    TEXT
    | TEXT.map(Trusted)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.booleans()
    | st.none()
)
ODD = st.lists(st.integers(), max_size=2) | st.dictionaries(TEXT, st.integers(), max_size=2)
KEYS = (
    st.sampled_from(["grpc_method", "ms", "payment_id", "a b", 'q"', "x=y", "", "exception"]) | TEXT
)
EVENTS = st.dictionaries(KEYS, PLAIN | ODD, max_size=8)


def structlog_json(event: dict[str, Any]) -> str:
    """What structlog's ``JSONRenderer`` wrote before (``json.dumps``, spaced)."""
    renderer = structlog.processors.JSONRenderer()
    return str(renderer(None, "info", dict(event)))


def parsed(line: str) -> list[tuple[str, Any]]:
    """The line's keys and values, in order; NaN and infinities as None (json.dumps
    wrote them as NaN and Infinity, which JSON has not: orjson writes null)."""
    return [
        (k, None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in json.loads(line, object_pairs_hook=list)
    ]


@settings(max_examples=500)
@given(EVENTS)
@example({"ms": math.nan, "b": math.inf, "c": -math.inf})
@example({"é": "\u2028\x00", "n": -(2**64), "t": True, "f": False, "z": None})
@example({"when": datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC), "what": Point(1, 2)})
@example({"ids": {1, 2}, "nested": {"a": [1.5, "b"]}, "deep": [[[[[[[]]]]]]]})
@example({"emoji": "\U0001f600 \ud800", "big": 2**80})
def test_json_line_has_the_keys_and_values_json_dumps_had(event: dict[str, Any]) -> None:
    line = render.json_line(event)
    assert line.isascii()
    assert "\n" not in line
    assert parsed(line) == parsed(structlog_json(event))


def test_json_line_is_compact() -> None:
    event = {"grpc_method": Trusted("p.v1.S/M"), "grpc_code": Trusted("OK"), "ms": 1.5}
    assert render.json_line(event) == '{"grpc_method":"p.v1.S/M","grpc_code":"OK","ms":1.5}'
    assert render.json_line({"a": math.nan, "é": -math.inf}) == '{"a":null,"\\u00e9":null}'
    assert render.json_line({"a": "\U0001f600"}) == '{"a":"\\ud83d\\ude00"}'  # as json.dumps
    # what orjson refuses, the standard library writes, in the same layout
    assert render.json_line({"n": 2**80, 1: "x"}) == '{"n":1208925819614629174706176,"1":"x"}'


CONSOLE = structlog.dev.ConsoleRenderer(colors=False)
# Its column "" (printed first), its traceback and stack, its logger columns.
LEFT_TO_CONSOLE_RENDERER = {"", "exception", "exc_info", "stack", "logger", "logger_name"}
STAMPS = st.fixed_dictionaries(
    {
        "timestamp": st.just("2026-12-07T11:08:24.981411Z"),
        "level": st.sampled_from(["debug", "info", "warning", "error", "critical"]),
        "event": TEXT,
    }
)


@settings(max_examples=500)
@given(STAMPS, EVENTS)
@example({"timestamp": "t", "level": "info", "event": "x" * 40}, {})
@example({"timestamp": "t", "level": "info", "event": "rpc"}, {"a": "ends in space "})
def test_console_line_is_console_renderer(stamps: dict[str, Any], fields: dict[str, Any]) -> None:
    event = {**fields, **stamps}
    line = render.console_line(event)
    if LEFT_TO_CONSOLE_RENDERER & event.keys():
        assert line is None
    else:  # every key is text, no traceback: the fast path takes it
        assert line == CONSOLE(None, "info", dict(event))


@pytest.mark.parametrize(
    "extra",
    [{"exception": "T"}, {"stack": "s"}, {"logger": "x"}, {"logger_name": "x"}, {1: 2}, {"": 0}],
)
def test_console_line_leaves_the_rest_to_console_renderer(extra: dict[Any, Any]) -> None:
    event = {"timestamp": "t", "level": "info", "event": "e", **extra}
    assert render.console_line(event) is None
    assert render.console_line({"level": "info", "event": "e"}) is None  # no timestamp


def full_scrub(text: str) -> str:
    """``scrub`` without its pre-check: every substitution, always."""
    if len(text) > paysim_logging._MAX_TEXT:
        text = text[: paysim_logging._MAX_TEXT] + "…"
    text = paysim_logging._BYTES_LITERAL.sub("[bytes]", text)
    text = paysim_logging._DIGIT_RUN.sub(paysim_logging._mask_card, text)
    return paysim_logging._HEX_RUN.sub("[hex]", text)


CARDISH = st.lists(
    st.sampled_from(["4111", "1111", " ", "-", "--", "0", "9", "a", "F", "b'", 'b"', "x", "٣"]),
    max_size=30,
).map("".join)


@settings(max_examples=1000)
@given(CARDISH | TEXT)
@example("4111 1111 1111 1111")
@example("4111-1111-1111-1111")
@example("0" * 32)
@example("pay_3f9c0a1b2c3d4e5f60718293")
@example("٣" * 13)  # Unicode digits: the regex's \d, not ASCII's
def test_the_pre_check_never_skips_a_scrub(text: str) -> None:
    if paysim_logging._SUSPECT.search(text) is not None:
        assert paysim_logging._suspect(text)
    assert scrub(text) == full_scrub(text)


def test_a_payment_id_passes_the_pre_check() -> None:
    # the common case the pre-check is for: no false alarm on every rpc line
    assert not paysim_logging._suspect("pay_3f9c0a1b2c3d4e5f60718293")
    assert paysim_logging._suspect("card 4111 1111 1111 1111")


# -- the configured chain against the six processors it replaced -------------------


@pytest.fixture
def restore() -> Iterator[None]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def six_processors(json_format: bool, process: str) -> list[Any]:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_format
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=paysim_logging._refuse_exc_info
        )
    )
    return [
        structlog.contextvars.merge_contextvars,
        paysim_logging._make_safe(structured=json_format),
        paysim_logging._add_process(process),
        structlog.processors.add_log_level,
        paysim_logging._Stamper(),
        renderer,
    ]


def lines(json_format: bool, reference: bool) -> list[str]:
    stream = io.StringIO()
    configure(level="debug", json=json_format, stream=stream, process="api")
    if reference:
        structlog.configure(processors=six_processors(json_format, "api"))
    structlog.configure(cache_logger_on_first_use=False)
    log = structlog.get_logger("test")
    structlog.contextvars.bind_contextvars(payment_id="pay_1", ms=0)
    log.info("rpc", grpc_method=Trusted("p.v1.S/M"), grpc_code=Trusted("OK"), ms=1.25)
    log.warning("odd", nested={"a": [1, b"xy"]}, raw=b"abc", nan=math.nan, text="a 'q'")
    log.debug("card", note="4111 1111 1111 1111", cvv="123", process="dev", level="x")
    structlog.contextvars.bind_contextvars(payment_id=Ellipsis)
    try:
        int("pay 4111111111111111")
    except ValueError:
        log.exception("failed", big=2**80)
    structlog.contextvars.clear_contextvars()
    structlog.get_logger("test").bind(process="bound").info("bound line", k="v")
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("json_format", [True, False], ids=["json", "console"])
def test_configured_lines_are_those_of_the_six_processors(
    restore: None, monkeypatch: pytest.MonkeyPatch, json_format: bool
) -> None:
    monkeypatch.setattr(
        "paysim.observability.logging.time.time_ns", lambda: 1_796_000_000_123_456_789
    )
    ours, theirs = lines(json_format, reference=False), lines(json_format, reference=True)
    if json_format:  # the same keys, order and values; compact
        assert [parsed(line) for line in ours] == [parsed(line) for line in theirs]
        assert all(line.startswith('{"') and '": ' not in line for line in ours)
    else:  # the same characters
        assert ours == theirs
    assert "2026-11-30T" in ours[0]
    assert ".123456Z" in ours[0]
    assert "4111" not in "\n".join(ours)
    assert "[redacted]" in ours[2]


def test_the_chaos_harness_still_counts_rpc_lines(restore: None) -> None:
    # paysim.chaos.stack counts the server's "rpc" lines by a byte marker
    from purerpc.grpclib.status import Status, StatusCode

    from paysim.chaos.stack import _RPC_LINE
    from paysim.entrypoints.grpc.calls import _log_rpc

    stream = io.StringIO()
    configure(level="info", json=True, stream=stream, process="api")
    structlog.configure(cache_logger_on_first_use=False)
    _log_rpc(
        Trusted("payment.v1.PaymentService/GetPaymentStatus"), Status(StatusCode.OK), 0.002, "x"
    )
    structlog.get_logger("test").info("not rpc", note="rpc")
    rpc, other = stream.getvalue().encode().splitlines()
    assert _RPC_LINE in rpc
    assert _RPC_LINE not in other
