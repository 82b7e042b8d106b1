"""RESP as ``redis_wire`` writes and reads it, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from paysim.adapters.redis_wire import (
    MAX_DEPTH,
    MAX_REPLY_BYTES,
    ReplyError,
    UnreachableReply,
    WireError,
    _Incomplete,
    pack_command,
    parse_reply,
)

REPLY = b"*6\r\n:1\r\n$-1\r\n$5\r\nab\r\nc\r\n*2\r\n$0\r\n\r\n:-7\r\n+OK\r\n*-1\r\n"
PARSED: list[Any] = [1, None, b"ab\r\nc", [b"", -7], b"OK", None]


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert pack_command(("EVALSHA", b"\x00\xff", 1, "é")) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\n\x00\xff\r\n$1\r\n1\r\n$2\r\n\xc3\xa9\r\n"
    )


def test_a_reply_of_every_kind_nested() -> None:
    assert parse_reply(REPLY) == (PARSED, len(REPLY))


def test_a_reply_cut_anywhere_is_incomplete_and_parses_once_whole() -> None:
    for cut in range(len(REPLY)):
        with pytest.raises(_Incomplete):
            parse_reply(REPLY[:cut])
    # What follows a reply is left for the next one.
    assert parse_reply(REPLY + b":5\r\n") == (PARSED, len(REPLY))


def test_error_replies_say_whether_the_server_cannot_serve_now() -> None:
    error, end = parse_reply(b"-NOSCRIPT No matching script\r\n")
    assert type(error) is ReplyError
    assert error.code == "NOSCRIPT"
    assert end == 30
    for code in ("LOADING", "READONLY", "NOAUTH", "WRONGPASS", "TRYAGAIN"):
        error, _ = parse_reply(f"-{code} not now\r\n".encode())
        assert type(error) is UnreachableReply
        assert error.code == code
    assert isinstance(UnreachableReply("x"), ReplyError)


@pytest.mark.parametrize("junk", [b"?what\r\n", b":12x\r\n", b"$abc\r\n", b"*2x\r\n"])
def test_bytes_that_are_not_resp_are_a_wire_error(junk: bytes) -> None:
    with pytest.raises(WireError, match="reply from the store"):
        parse_reply(junk)
    assert issubclass(WireError, ConnectionError)  # so the batcher counts it as an outage


def test_arrays_may_nest_as_deep_as_the_bound_and_no_deeper() -> None:
    deepest = b"*1\r\n" * MAX_DEPTH + b":1\r\n"
    reply, end = parse_reply(deepest)
    assert end == len(deepest)
    for _ in range(MAX_DEPTH):
        reply = reply[0]
    assert reply == 1
    with pytest.raises(WireError, match="nests deeper than"):
        parse_reply(b"*1\r\n" + deepest)


def test_a_bulk_string_announcing_more_than_the_bound_is_refused_before_it_arrives() -> None:
    with pytest.raises(WireError, match="larger than 1000 bytes"):
        parse_reply(b"$1001\r\n", max_bytes=1000)
    with pytest.raises(_Incomplete):  # at the bound: waits for its bytes
        parse_reply(b"$1000\r\n", max_bytes=1000)
    assert MAX_REPLY_BYTES >= 2 * 512 * 1024 * 1024  # Redis stores strings up to 512 MB
