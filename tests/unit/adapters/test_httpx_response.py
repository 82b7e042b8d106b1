"""``Http1Transport``'s responses: made already read, the same as httpx's ``content=`` ones.

``_response`` sets httpx's private ``_content`` instead of letting
``httpx.Response`` read its own body (see its docstring); these tests compare
what a caller can see of both, and pin that the installed httpx takes the
fast path at all.
"""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from paysim.adapters import httpx_transport
from paysim.adapters.httpx_transport import _response

Headers = tuple[tuple[bytes, bytes], ...]

CASES: list[tuple[int, Headers, bytes]] = [
    (200, ((b"content-length", b"0"), (b"content-type", b"application/json")), b""),
    (
        201,
        ((b"content-type", b"application/json; charset=utf-8"), (b"content-length", b"11")),
        b'{"ok": "\xc3\xa9"}'[:11],
    ),
    (
        429,
        ((b"retry-after", b"7"), (b"content-length", b"4"), (b"x-a", b"1"), (b"x-a", b"2")),
        b"slow",
    ),
    (
        503,
        ((b"content-length", b"3"), (b"content-type", b"text/plain; charset=latin-1")),
        b"\xe9t\xe9",
    ),
    (204, ((b"content-length", b"0"),), b""),
]


def unread(self: httpx.Response, chunk_size: int | None = None) -> None:
    raise AssertionError("httpx read the body itself")


def observable(response: httpx.Response) -> dict[str, object]:
    """What a caller can read of a response."""
    return {
        "status": response.status_code,
        "headers": response.headers.multi_items(),
        "raw": response.headers.raw,
        "content": response.content,
        "read": response.read(),
        "text": response.text,
        "encoding": response.encoding,
        "closed": response.is_closed,
        "consumed": response.is_stream_consumed,
        "downloaded": response.num_bytes_downloaded,
        "http_version": response.http_version,
    }


def test_the_installed_httpx_takes_the_fast_path() -> None:
    """If this fails, httpx changed how it keeps a read body: every webhook response
    takes the public (slower) path. Check ``_response`` against the new httpx."""
    assert httpx_transport._PRESET_OK is True


@pytest.mark.parametrize(("status", "headers", "body"), CASES)
async def test_a_preset_response_reads_as_httpx_reads_its_own(
    monkeypatch, status, headers, body
) -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/hook")
    with monkeypatch.context() as patched:
        patched.setattr(httpx.Response, "iter_bytes", unread)  # the fast path reads nothing
        fast = _response(status, headers, body, request)
    reference = httpx.Response(
        status,
        headers=list(headers),
        content=body,
        request=request,
        extensions={"http_version": b"HTTP/1.1"},
    )
    assert observable(fast) == observable(reference)
    assert fast.request is request
    assert await fast.aread() == body
    assert [part async for part in fast.aiter_bytes()] == [
        part async for part in reference.aiter_bytes()
    ]
    with pytest.raises(httpx.StreamConsumed):
        [part async for part in fast.aiter_raw()]


async def test_the_response_of_the_transport_takes_the_fast_path_with_a_length() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/hook")
    fast = _response(200, ((b"content-length", b"2"),), b"{}", request)
    assert fast.json() == {}


def test_an_encoded_body_is_decoded_by_httpx() -> None:
    """Content-Encoding: httpx's own path, which decodes (the request asked for gzip)."""
    body = gzip.compress(json.dumps({"ok": True}).encode())
    headers = ((b"content-encoding", b"gzip"), (b"content-length", b"%d" % len(body)))
    response = _response(200, headers, body, None)
    assert response.json() == {"ok": True}


def test_without_a_length_httpx_adds_one_as_before() -> None:
    """A chunked or until-close body: httpx's path, which adds Content-Length."""
    response = _response(200, ((b"transfer-encoding", b"chunked"),), b"abc", None)
    assert response.content == b"abc"
    assert response.headers["content-length"] == "3"


@pytest.mark.parametrize(("status", "headers", "body"), CASES)
def test_without_the_fast_path_the_response_is_the_same(monkeypatch, status, headers, body):
    fast = _response(status, headers, body, None)
    monkeypatch.setattr(httpx_transport, "_PRESET_OK", False)
    slow = _response(status, headers, body, None)
    assert observable(fast) == observable(slow)


def test_the_feature_test_fails_when_httpx_keeps_the_body_elsewhere(monkeypatch) -> None:
    def read_elsewhere(self: httpx.Response) -> bytes:
        return b"elsewhere"

    monkeypatch.setattr(httpx.Response, "read", read_elsewhere)
    assert httpx_transport._preset_works() is False
