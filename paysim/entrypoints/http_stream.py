"""A streamed response body (Server-Sent Events) on one h11 connection.

``send_stream`` sends the head without Content-Length (h11 chunks the body
for HTTP/1.1, and delimits it by closing for HTTP/1.0), then every chunk the
handler's ``stream(send)`` sends, then the end. Each write gets
``write_timeout_s``: a reader that stops reading is dropped (``send`` raises
``trio.BrokenResourceError``, which ends the connection quietly). The
connection always closes after a stream. Cancellation (the server stopping)
ends the stream where it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import h11
import trio

if TYPE_CHECKING:
    from paysim.entrypoints.http import HttpResponse

Send = Callable[[bytes], Awaitable[None]]


async def send_stream(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    response: HttpResponse,
    body: Callable[[Send], Awaitable[None]] | None,
    write_timeout_s: float,
) -> None:
    """Send ``response``'s head, then what ``body`` sends (None: a HEAD, no body)."""
    headers = [
        ("Content-Type", response.content_type),
        ("Server", "paysim"),
        ("Connection", "close"),
        *response.headers,
    ]

    async def write(data: bytes) -> None:
        with trio.move_on_after(write_timeout_s):
            await stream.send_all(data)
            return
        raise trio.BrokenResourceError("the reader stopped reading")

    async def send(chunk: bytes) -> None:
        await write(conn.send(h11.Data(data=chunk)))

    await write(conn.send(h11.Response(status_code=response.status, headers=headers)))
    if body is not None:
        await body(send)
    await write(conn.send(h11.EndOfMessage()))
