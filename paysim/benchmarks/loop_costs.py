"""Two per-payment costs of the event loop, measured in isolation (CPU per operation).

    python -m paysim.benchmarks.loop_costs reads [--n 50000]
    python -m paysim.benchmarks.loop_costs clock [--n 20000]

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

Both are figures for comparing trees (run each from its checkout), never a
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=("reads", "clock"))
    parser.add_argument("--n", type=int, default=0, help="operations (default 50,000 / 20,000)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    for _ in range(args.rounds):
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
