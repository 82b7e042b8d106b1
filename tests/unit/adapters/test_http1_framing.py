"""``http1_framing``: what ``Http1Client`` writes and how it reads an answer.

The reader replaced h11 in the client (issue 18), so besides its own cases
the same responses go through h11, the reference: whatever h11 reads, the
reader reads alike (status, headers, body, whether the connection is kept),
fed whole and one byte at a time; whatever h11 refuses, it refuses too.
"""

from __future__ import annotations

import gc
import weakref

import h11
import pytest

from paysim.adapters import http1_framing
from paysim.adapters.http1_framing import (
    FramingError,
    ResponseReader,
    asks_to_close,
    encode_request,
)

MAX = 65536


def read(
    data: bytes,
    *,
    head: bool = False,
    split: bool = False,
    eof: bool = False,
    max_head: int = MAX,
    max_body: int = MAX,
) -> ResponseReader:
    reader = ResponseReader(head_request=head, max_head=max_head, max_body=max_body)
    pieces = [data[i : i + 1] for i in range(len(data))] if split else [data]
    for piece in pieces:
        if reader.feed(piece):
            return reader
    if eof:
        assert reader.feed(b"")
    return reader


# -- writing ---------------------------------------------------------------------------


def test_a_request_is_written_as_given_head_then_body() -> None:
    data = encode_request(
        b"POST",
        b"/hooks?x=1",
        [(b"Host", b"a.example:8443"), (b"X-Sig", b"sha256=ab cd"), (b"Content-Length", b"2")],
        b"{}",
    )
    assert data == (
        b"POST /hooks?x=1 HTTP/1.1\r\nHost: a.example:8443\r\nX-Sig: sha256=ab cd\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )


def test_the_bytes_are_h11s() -> None:
    headers = [(b"Host", b"h"), (b"User-Agent", b"PaymentSim/1.0"), (b"Content-Length", b"3")]
    conn = h11.Connection(h11.CLIENT)
    expected = conn.send(h11.Request(method=b"PUT", target=b"/a%20b", headers=headers))
    expected = (expected or b"") + (conn.send(h11.Data(data=b"abc")) or b"")
    assert encode_request(b"PUT", b"/a%20b", headers, b"abc") == expected


@pytest.mark.parametrize(
    ("method", "target", "header"),
    [
        (b"GE T", b"/", (b"X", b"1")),
        (b"GET", b"/a b", (b"X", b"1")),
        (b"GET", b"/a\r\nX: y", (b"X", b"1")),
        (b"GET", b"", (b"X", b"1")),
        (b"GET", b"/", (b"X Y", b"1")),
        (b"GET", b"/", (b"X:", b"1")),
        (b"GET", b"/", (b"", b"1")),
        (b"GET", b"/", (b"X", b"a\r\nInjected: 1")),
        (b"GET", b"/", (b"X", b"a\nb")),
        (b"GET", b"/", (b"X", b"a\x00b")),
        (b"GET", b"/", (b"X", b" leading")),
        (b"GET", b"/", (b"X", b"trailing ")),
    ],
)
def test_what_h11_refuses_to_send_is_refused(method: bytes, target: bytes, header) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        encode_request(method, target, [(b"Host", b"h"), header], b"")
    with pytest.raises(h11.LocalProtocolError):
        h11.Connection(h11.CLIENT).send(
            h11.Request(method=method, target=target, headers=[(b"Host", b"h"), header])
        )


def test_a_delete_character_is_refused_too() -> None:
    """h11 lets DEL (0x7f) through; RFC 9110 §5.5 does not (it is not a VCHAR)."""
    with pytest.raises(ValueError, match="illegal value"):
        encode_request(b"GET", b"/", [(b"Host", b"h"), (b"X", b"a\x7fb")], b"")


def test_remembered_names_are_bounded_and_an_illegal_one_is_still_refused() -> None:
    for i in range(http1_framing._MAX_VALID_NAMES * 2):
        encode_request(b"GET", b"/", [(b"X-Name-%d" % i, b"v")], b"")
        assert len(http1_framing._VALID_NAMES) <= http1_framing._MAX_VALID_NAMES
    encode_request(b"GET", b"/", [(b"X-Known", b"v")], b"")
    assert b"X-Known" in http1_framing._VALID_NAMES
    with pytest.raises(ValueError, match="illegal header name"):
        encode_request(b"GET", b"/", [(b"X-Known", b"v"), (b"Bad Name", b"v")], b"")
    with pytest.raises(ValueError, match="illegal value"):  # a known name, a bad value
        encode_request(b"GET", b"/", [(b"X-Known", b"a\r\nInjected: 1")], b"")


def test_connection_close_is_found_in_any_case_and_list() -> None:
    assert asks_to_close([(b"connection", b"keep-alive, Close")])
    assert not asks_to_close([(b"X-Connection", b"close"), (b"Connection", b"closed")])


# -- reading ------------------------------------------------------------------------------


def test_a_response_with_a_length_is_read_and_the_connection_kept() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
    assert (reader.done, reader.reusable) == (True, True)
    assert reader.head is not None
    assert (reader.head.status, reader.body) == (200, b"ok")
    assert reader.head.headers == ((b"content-type", b"text/plain"), (b"content-length", b"2"))


def test_a_body_until_close_ends_at_eof_and_is_not_kept() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\n\r\nall of it", eof=True)
    assert (reader.body, reader.reusable) == (b"all of it", False)


def test_bytes_after_the_response_mean_the_connection_is_not_kept() -> None:
    reader = read(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\n")
    assert (reader.done, reader.reusable) == (True, False)


def test_more_data_after_the_response_is_refused() -> None:
    reader = read(b"HTTP/1.1 204 No Content\r\n\r\n")
    with pytest.raises(FramingError):
        reader.feed(b"x")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * MAX + b"\r\n\r\n", "head over"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n", "body over"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11171\r\n", "body over"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 70000, "line over"),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 70000, "body over"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"X: y\r\n" * 12000,
            "trailers over",
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "101"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\n folded\r\n\r\n", "folded line before"),
    ],
)
def test_what_breaks_a_bound_or_the_grammar_raises(data: bytes, why: str) -> None:
    with pytest.raises(FramingError, match=why):
        read(data, max_body=MAX)


def test_a_response_cut_short_raises_at_eof() -> None:
    for data in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-",
    ):
        reader = read(data)
        with pytest.raises(FramingError, match="closed before"):
            reader.feed(b"")


# -- the same answers through h11 ---------------------------------------------------------

VALID = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length:  2 \r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 503\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    b"HTTP/1.1 200 OK\r\nX-A: a\r\n  b\r\n\tc\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Sp: a  b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 \xe4\xbd\xa0\r\nX-Obs: caf\xe9\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
    b"HTTP/1.1 200 OK\r\n\r\nuntil close",
]

INVALID = [
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1  200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n : x\r\n\r\n",
]


def h11_reads(data: bytes) -> tuple[int, tuple[tuple[bytes, bytes], ...], bytes, bool]:
    """(status, headers, body, kept) as h11 reads ``data`` after a GET; ProtocolError if not."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    status, body = 0, b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    eof_sent = False
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            assert not eof_sent
            conn.receive_data(b"")
            eof_sent = True
        elif isinstance(event, h11.Response):
            status, headers = event.status_code, tuple(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            kept = (
                conn.our_state is h11.DONE
                and conn.their_state is h11.DONE
                and not conn.trailing_data[0]
            )
            return status, headers, body, kept


# Fed a byte at a time, the reader is done before any extra bytes: not those.
CASES = [(data, False) for data in VALID] + [
    (data, True) for data in VALID if not data.endswith(b"EXTRA")
]


@pytest.mark.parametrize(("data", "split"), CASES)
def test_valid_answers_read_as_h11_reads_them(data: bytes, split: bool) -> None:
    status, headers, body, kept = h11_reads(data)
    until_close = b"until close" in data
    reader = read(data, split=split, eof=until_close)
    assert reader.head is not None
    assert reader.head.status == status
    assert body == reader.body
    # h11 calls a body that ended with the connection DONE too; the pool then
    # found the connection closed at its next use. The reader says so at once.
    assert reader.reusable == (kept and not until_close)
    ours = dict(reader.head.headers)
    for name, value in headers:  # h11 normalises framing values; the rest must be equal
        if name not in (b"content-length", b"transfer-encoding"):
            assert ours[name] == value


@pytest.mark.parametrize("data", INVALID)
def test_invalid_answers_are_refused_as_h11_refuses_them(data: bytes) -> None:
    with pytest.raises(h11.RemoteProtocolError):
        h11_reads(data)
    with pytest.raises(FramingError):
        read(data, eof=True)


def test_head_responses_have_no_body() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", head=True)
    assert (reader.done, reader.reusable, reader.body) == (True, True, b"")


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ],
)
def test_a_reader_is_freed_without_the_garbage_collector(data: bytes) -> None:
    # One reader per webhook: a reference cycle in it (a bound method kept as its
    # state) left every reader, head and header tuple to the collector.
    gc.disable()
    try:
        reader = ResponseReader(head_request=False, max_head=MAX, max_body=MAX)
        assert reader.feed(data)
        alive = weakref.ref(reader)
        del reader
        assert alive() is None
    finally:
        gc.enable()
