"""Two per-payment costs of the event loop, measured in isolation (CPU per operation).

    python -m paysim.benchmarks.loop_costs reads [--n 50000]
    python -m paysim.benchmarks.loop_costs clock [--n 20000]
    python -m paysim.benchmarks.loop_costs webhook [--n 5000]

``reads``: one 146-byte read (a CreatePaymentIntent's frames, as grpc.aio
sends them) from a socket pair, through ``trio.SocketStream.receive_some``
(the gRPC reader's old path), ``socket_io.receive_eager`` (its path now) and
``socket_io.receive`` (wait first), with the bytes already there ("ready")
and written by another task only after the reader waits ("later"; that case
includes the writer task's own cost, the same for the three).

``clock``: the simulator firing ``--n`` timers due 0.5 ms apart (2,000
payments/s), on trio's ``MockClock`` so that the count of clock wakes, not
the machine's timing, decides the cost; the figure includes the mock clock's
own jumps.

``webhook``: one webhook through ``WebhookSender.send`` (signing, httpx's
request and response, the transport, ``Http1Client``, one keep-alive
connection) to a minimal HTTP/1.1 receiver in the same trio run, one at a
time: both sides' CPU per webhook. Under valgrind's cachegrind, the
difference between two ``--n`` divided by the webhooks between them is a
count of instructions per webhook that does not drift with the machine.

All are figures for comparing trees (run each from its checkout), never a
test's threshold.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial

import trio
import trio.testing

from paysim.adapters import socket_io
from paysim.adapters.http1_client import Http1Client
from paysim.adapters.httpx_transport import CookielessClient, Http1Transport
from paysim.benchmarks import put_events
from paysim.config import WebhookSettings
from paysim.delivery.webhook_sender import WebhookSender
from paysim.domain.events import webhook_body
from paysim.simulator import Simulator

_MESSAGE = b"x" * 146
Reader = Callable[[trio.SocketStream, int], Awaitable[bytes | bytearray]]
READERS: dict[str, Reader] = {
    "SocketStream.receive_some": lambda stream, fd: stream.receive_some(65536),
    "socket_io.receive_eager": lambda stream, fd: socket_io.receive_eager(stream, fd, 65536),
    "socket_io.receive": lambda stream, fd: socket_io.receive(stream, fd, 65536),
}


async def read_cost(read: Reader, n: int, *, ready: bool) -> float:
    """CPU µs per read of one message, ``ready`` or written after the reader waits."""
    left, right = trio.socket.socketpair()
    with left, right:
        stream = trio.SocketStream(right)
        fd, peer = right.fileno(), left.fileno()

        async def write_later() -> None:
            await trio.lowlevel.checkpoint()
            os.write(peer, _MESSAGE)

        started = time.process_time()
        for _ in range(n):
            if ready:
                os.write(peer, _MESSAGE)
                data = await read(stream, fd)
            else:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write_later)
                    data = await read(stream, fd)
            if len(data) != len(_MESSAGE):
                raise AssertionError(f"read {len(data)} bytes")
        return 1e6 * (time.process_time() - started) / n


def clock_cost(n: int, spacing_s: float = 0.0005) -> tuple[float, int]:
    """CPU µs per timer, and how many fired, for ``n`` timers ``spacing_s`` apart."""
    fired = 0

    async def fire(payment_id: str) -> None:
        nonlocal fired
        fired += 1

    async def run() -> float:
        started = time.process_time()
        async with trio.open_nursery() as nursery:
            sim = Simulator(nursery, max_pending=n)
            for i in range(n):
                sim.schedule(str(i), 0.2 + i * spacing_s, fire)
        return 1e6 * (time.process_time() - started) / n

    cost = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    return cost, fired


_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


async def _answer_webhooks(stream: trio.SocketStream) -> None:
    """Answer each request on ``stream`` with 200 (requests framed by Content-Length)."""
    buffer = b""
    while data := await stream.receive_some(65536):
        buffer += data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = buffer[:end].lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(buffer) < end + 4 + length:
                break
            buffer = buffer[end + 4 + length :]
            await stream.send_all(_ANSWER)


async def webhook_cost(n: int) -> float:
    """CPU µs per webhook sent and answered in this process (both sides)."""
    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_tcp, _answer_webhooks, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/hook"
        transport = Http1Transport(Http1Client(max_connections=1))
        async with CookielessClient(
            transport=transport, follow_redirects=False, trust_env=False
        ) as client:
            sender = WebhookSender(WebhookSettings(), client, time.time)
            change = put_events.change(1, url)
            body = webhook_body(change)
            started = time.process_time()
            for _ in range(n):
                sent = await sender.send(change, body, 1)
                if not sent.ok:
                    raise AssertionError(f"webhook not delivered: {sent.result}")
            cost = 1e6 * (time.process_time() - started) / n
        nursery.cancel_scope.cancel()
    return cost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=("reads", "clock", "webhook"))
    parser.add_argument("--n", type=int, default=0, help="operations (default 50,000 / 20,000)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    for _ in range(args.rounds):
        if args.case == "webhook":
            cost = trio.run(webhook_cost, args.n or 5_000)
            print(f"webhook: {cost:.1f} µs of CPU per webhook, sender and receiver")
            continue
        if args.case == "clock":
            cost, fired = clock_cost(args.n or 20_000)
            print(f"clock: {fired} timers due 0.5 ms apart, {cost:.1f} µs of CPU per timer")
            continue
        for ready in (True, False):
            for name, read in READERS.items():
                cost = trio.run(partial(read_cost, read, args.n or 50_000, ready=ready))
                when = "ready" if ready else "later"
                print(f"reads: {name:27s} bytes {when}: {cost:6.2f} µs of CPU per read")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
