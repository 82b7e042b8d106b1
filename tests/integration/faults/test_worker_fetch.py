"""Reading the worker's record over a real socket: every failure is a worker section error.

A worker that is down (connection refused), one that accepts and never answers
(virtual time: bounded by the check's timeout, exactly), one that sends too
much, one that answers something else: ``WorkerCheck.section()`` returns
``{"error": ...}`` and never raises; the gauges say -1 and the error counter moves.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry

from paysim.adapters.memory_store import MemoryStore
from paysim.faults.ledger import Ledger
from paysim.faults.settings import WorkerCheckSettings
from paysim.faults.worker_check import WorkerCheck

Handler = Callable[[trio.SocketStream], Awaitable[None]]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as c:
        yield c


async def serve(nursery: trio.Nursery, handler: Handler) -> str:
    serve_tcp = functools.partial(trio.serve_tcp, host="127.0.0.1")
    listeners = await nursery.start(serve_tcp, handler, 0)
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


def answering(head: bytes, *chunks: bytes, forever: bytes = b"") -> Handler:
    async def handle(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(head)
        for chunk in chunks:
            await stream.send_all(chunk)
        while forever:
            await stream.send_all(forever)
        await stream.aclose()

    return handle


def make_check(
    url: str, client: httpx.AsyncClient, registry: CollectorRegistry | None = None, **settings: Any
) -> WorkerCheck:
    check = WorkerCheck(
        dataclasses.replace(WorkerCheckSettings(url=url), **settings),
        Ledger(completions=True),
        client,
        MemoryStore(3600.0),
    )
    check.register(registry if registry is not None else CollectorRegistry())
    return check


async def test_a_worker_that_is_down_is_an_error_not_a_failure(client):
    with socket.socket() as bound:  # bound, not listening: connecting is refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        section = await make_check(url, client).section()
    assert section["error"].startswith(f"the worker at {url} is unreachable")
    assert section["url"] == url


async def test_a_worker_that_never_answers_is_given_up_after_the_timeout(
    client, nursery, autojump_clock
):
    async def hang(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await trio.sleep_forever()

    url = await serve(nursery, hang)
    check = make_check(url, client, timeout_s=2.0)
    started = trio.current_time()
    section = await check.section()
    assert trio.current_time() - started == pytest.approx(2.0)
    assert section["error"] == f"the worker at {url} did not answer within 2 s"
    assert check._count("confirmed_not_completed") == -1.0


async def test_a_worker_that_trickles_bytes_is_bounded_by_the_same_timeout(
    client, nursery, autojump_clock
):
    async def trickle(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        while True:
            await stream.send_all(b" ")
            await trio.sleep(0.5)

    url = await serve(nursery, trickle)
    started = trio.current_time()
    section = await make_check(url, client, timeout_s=2.0).section()
    assert trio.current_time() - started == pytest.approx(2.0)
    assert "did not answer within 2 s" in section["error"]


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        # A declared length over the bound: refused before reading.
        (
            answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n"),
            "more than 1000 bytes",
        ),
        # No length, a body that never ends: refused once past the bound.
        (
            answering(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                forever=b"400\r\n" + b"x" * 1024 + b"\r\n",
            ),
            "more than 1000 bytes",
        ),
        (answering(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"), "HTTP 503"),
        (answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"{nope"), "not JSON"),
        (
            answering(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", b'{"other": 1}'),
            "not its record: the answer has no list of reservations",
        ),
        (answering(b"garbage\r\n\r\n"), "broke the HTTP exchange"),
    ],
)
async def test_a_worker_answer_that_is_too_big_or_malformed_is_an_error(
    client, nursery, handler, error
):
    url = await serve(nursery, handler)
    registry = CollectorRegistry()
    check = make_check(url, client, registry, max_bytes=1000)
    with trio.fail_after(5):
        section = await check.section()
    assert error in section["error"]
    assert "Traceback" not in section["error"]
    assert registry.get_sample_value("paysim_reconciliation_worker_errors_total") == 1.0
    assert registry.get_sample_value("paysim_reconciliation_completed_not_confirmed") == -1.0


async def test_a_worker_that_answers_gives_findings(client, nursery):
    record = {"reservations": [], "evicted": 0, "dropped_before": 0, "reservation_api": True}
    body = json.dumps(record).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    url = await serve(nursery, answering(head, body))
    check = make_check(url, client)
    section = await check.section()
    assert "error" not in section
    assert section["confirmed_not_completed"]["count"] == 0
    assert check._count("completed_not_confirmed") == 0.0
