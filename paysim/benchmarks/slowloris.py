"""Slowloris against the HTTP endpoint: does ``/livez`` still answer?

Runs ``serve_http`` in this process on a loopback port (default limits), opens
``--connections`` hostile connections that each send a request head one byte
a second (``--mode drip``) or nothing at all (``--mode silent``), and reconnect
whenever the server closes them, as an attacker would. Once they are all
connected it sends one ``GET /livez`` probe every ``--interval`` seconds on a
fresh connection, each with the kubelet's default 1 s timeout, and reports
what the probes got::

    python -m paysim.benchmarks.slowloris --connections 256
    python -m paysim.benchmarks.slowloris --connections 1000 --mode silent

Real sockets and the real clock: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import trio

from paysim.entrypoints.http import HttpApp, HttpLimits, serve_http
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics

_HEAD = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096


async def _attacker(port: int, mode: str, connected: list[int], all_in: trio.Event, n: int) -> None:
    counted = False
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.1)
            continue
        if not counted:
            connected[0] += 1
            counted = True
            if connected[0] == n:
                all_in.set()
        try:
            async with stream:
                if mode == "silent":
                    await stream.receive_some(1)  # until the server closes it
                else:
                    for byte in _HEAD:
                        await stream.send_all(bytes([byte]))
                        with trio.move_on_after(1.0):
                            if not await stream.receive_some(65536):
                                break  # closed by the server
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


async def _probe(port: int) -> tuple[str, float]:
    started = time.perf_counter()
    with trio.move_on_after(1.0):
        try:
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(b"GET /livez HTTP/1.1\r\nHost: probe\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return "closed", time.perf_counter() - started
                    data += chunk
                return data.split(b" ", 2)[1].decode(), time.perf_counter() - started
        except OSError:
            return "error", time.perf_counter() - started
    return "timeout", time.perf_counter() - started


async def run(connections: int, mode: str, probes: int, interval: float) -> None:
    readiness = Readiness()
    readiness.mark_serving()
    app = HttpApp(readiness, Metrics())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, "127.0.0.1", 0, app, HttpLimits())
        connected, all_in = [0], trio.Event()
        for _ in range(connections):
            nursery.start_soon(_attacker, port, mode, connected, all_in, connections)
        with trio.move_on_after(10):
            await all_in.wait()
        await trio.sleep(0.5)
        results: list[tuple[str, float]] = []
        for _ in range(probes):
            results.append(await _probe(port))
            await trio.sleep(interval)
        nursery.cancel_scope.cancel()
    counts = collections.Counter(status for status, _ in results)
    ok = [s for status, s in results if status == "200"]
    print(
        f"{connections} {mode} connections ({connected[0]} connected), {probes} probes "
        f"every {interval} s: {dict(counts)}"
    )
    if ok:
        print(
            f"  200 latency: median {statistics.median(ok) * 1000:.1f} ms, "
            f"max {max(ok) * 1000:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--mode", choices=("drip", "silent"), default="drip")
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    trio.run(run, args.connections, args.mode, args.probes, args.interval)


if __name__ == "__main__":
    main()
