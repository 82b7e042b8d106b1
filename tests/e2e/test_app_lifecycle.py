"""The app's lifetime: readiness, graceful drain, the grace deadline, and the real CLI.

In-process tests start ``paysim.app.run`` with the ``start_app`` fixture and
hold a call in flight with a grpcio ``Health/Watch`` stream: its NOT_SERVING
message is the sign that shutdown has begun (no sleeping). Subprocess tests run
``python -m paysim serve`` on port 0 and read the ports from its JSON log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio
from grpc_health.v1 import health_pb2

from tests.grpc_helpers import (
    AppHandle,
    StartApp,
    call,
    check_health,
    create_request,
    make_settings,
    open_channel,
    open_health_watch,
    payment_stub,
)

ROOT = Path(__file__).resolve().parents[2]
HEALTH_BODY = b'{"status":"healthy","service":"payment-sim-api"}'
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROMPT_S = 1.0  # "at once": far below any grace period used here, far above the real cost


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """One raw HTTP/1.1 GET on a fresh connection; (status, body)."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            request = f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode())
            data = bytearray()
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def assert_refused(port: int) -> None:
    """Nothing listens on ``port`` any more: the kernel refuses the connection."""
    with pytest.raises(OSError, match="connect") as info:
        await trio.open_tcp_stream("127.0.0.1", port)
    cause = info.value.__cause__  # trio: OSError from ExceptionGroup[per-attempt errors]
    assert isinstance(cause, BaseExceptionGroup)
    assert cause.subgroup(ConnectionRefusedError) is not None, repr(cause)


def with_grace(grace_s: float) -> Any:
    return dataclasses.replace(make_settings(), shutdown_grace_s=grace_s)


# -- readiness -----------------------------------------------------------------


async def test_health_and_readyz_are_200_while_running(app: AppHandle):
    assert await http_get(app.http_port, "/health") == (200, HEALTH_BODY)
    status, _ = await http_get(app.http_port, "/readyz")
    assert status == 200
    assert app.running.readiness.is_ready


async def test_drain_serves_in_flight_calls_and_turns_not_ready(start_app: StartApp):
    """While a call is in flight the app drains: not ready, no new connections, the
    call still served; once the call ends, ``run`` returns at once and cleanly."""
    app = await start_app(with_grace(5.0))
    watch = await RawWatch.open(app.grpc_port)
    try:
        assert await watch.until_frame(DATA) == 1  # SERVING: the call is in flight
        app.shutdown.set()
        await watch.until_frame(GOAWAY)  # the drain has begun
        await watch.until_data(2)  # NOT_SERVING: the in-flight stream is still served

        status, _ = await http_get(app.http_port, "/readyz")
        assert status == 503
        assert (await http_get(app.http_port, "/health"))[0] == 200  # alive while draining
        await assert_refused(app.grpc_port)  # the gRPC listener is closed
        assert not app.stopped.is_set()  # held open by our call

        await watch.cancel()  # RST_STREAM(CANCEL); the connection stays open
        with trio.fail_after(PROMPT_S):
            await app.stopped.wait()
    finally:
        await watch.aclose()
    assert app.failure is None
    await assert_refused(app.http_port)


async def test_idle_app_stops_at_once_and_refuses_connections(start_app: StartApp):
    app = await start_app(with_grace(5.0))
    with payment_stub(app.grpc_port) as stub:
        await call(stub.CreatePaymentIntent, create_request())  # a pending payment
        assert app.running.simulator.pending == 1
        # The connection stays open (idle): drain must close it, not wait for it.
        app.shutdown.set()
        with trio.fail_after(PROMPT_S):  # a fifth of the grace period
            await app.stopped.wait()
    assert app.failure is None
    # Its timer (due in 30 s, beyond the grace) fired at once: the pending policy
    # "resolve" announces every accepted payment's outcome before the process ends.
    assert [c.payment.status.name for c in app.notifier.changes] == ["COMPLETED"]
    await assert_refused(app.grpc_port)
    await assert_refused(app.http_port)


async def test_grace_deadline_cuts_a_call_that_does_not_finish(start_app: StartApp):
    app = await start_app(with_grace(0.3))
    channel = open_channel(app.grpc_port)
    try:
        async with open_health_watch(channel) as watch:
            assert await watch.next_status() == SERVING
            started = trio.current_time()
            app.shutdown.set()
            assert await watch.next_status() == NOT_SERVING
            with trio.fail_after(5):
                await app.stopped.wait()
            elapsed = trio.current_time() - started
            # The stream ends from the server's side: the client did not cancel it.
            with trio.fail_after(5), pytest.raises(trio.EndOfChannel):
                await watch.statuses.receive()
    finally:
        channel.close()
    assert 0.3 <= elapsed < 0.3 + PROMPT_S
    assert app.failure is None
    assert watch.end_code
    assert watch.end_code != [grpc.StatusCode.OK]
    assert watch.end_code != [grpc.StatusCode.CANCELLED]


# -- a raw HTTP/2 client: full control over when a call ends and the socket closes --

DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0, 1, 3, 4, 7
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    head = len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream_id.to_bytes(4, "big")
    return head + payload


def _watch_request() -> bytes:
    """HEADERS + DATA for ``Health/Watch("")`` on stream 1 (HPACK literals, no indexing)."""

    def literal(name: str, value: str) -> bytes:
        n, v = name.encode(), value.encode()
        return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v

    block = b"".join(
        literal(k, v)
        for k, v in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Watch"),
            (":authority", "localhost"),
            ("te", "trailers"),
            ("content-type", "application/grpc"),
        ]
    )
    message = b"\x00\x00\x00\x00\x00"  # an empty HealthCheckRequest, uncompressed
    end_headers, end_stream = 0x4, 0x1
    return h2_frame(HEADERS, end_headers, 1, block) + h2_frame(DATA, end_stream, 1, message)


class RawWatch:
    """``Health/Watch`` on stream 1 of a hand-driven HTTP/2 connection.

    grpcio closes its connection by itself once it has seen GOAWAY and has no
    call left; this client closes only when told to, so a test decides whether
    the server sees RST_STREAM, EOF, or both.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.frames: list[int] = []
        self._buf = b""

    @classmethod
    async def open(cls, port: int, *, call: bool = True) -> RawWatch:
        self = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await self.stream.send_all(
            H2_PREFACE + h2_frame(SETTINGS, 0, 0) + (_watch_request() if call else b"")
        )
        return self

    @property
    def data_frames(self) -> int:
        return self.frames.count(DATA)

    async def until_frame(self, ftype: int) -> int:
        """Read frames until one of ``ftype`` arrives; the number of DATA frames so far."""
        with trio.fail_after(10):
            while True:
                while len(self._buf) >= 9 and len(self._buf) >= 9 + int.from_bytes(
                    self._buf[:3], "big"
                ):
                    length, kind = int.from_bytes(self._buf[:3], "big"), self._buf[3]
                    self._buf = self._buf[9 + length :]
                    self.frames.append(kind)
                    if kind == ftype:
                        return self.data_frames
                chunk = await self.stream.receive_some(65536)
                assert chunk, f"the server closed the connection; frames: {self.frames}"
                self._buf += chunk

    async def until_data(self, count: int) -> None:
        while self.data_frames < count:
            await self.until_frame(DATA)

    async def cancel(self) -> None:
        await self.stream.send_all(h2_frame(RST_STREAM, 0, 1, (8).to_bytes(4, "big")))

    async def aclose(self) -> None:
        await self.stream.aclose()


async def test_client_dropping_mid_call_does_not_hold_the_drain(start_app: StartApp):
    """A client that vanishes mid-call during the drain ends that call (counted,
    CANCELLED); the drain does not wait for the grace period. (Regression: the
    call's bookkeeping was skipped when the connection's nursery was cancelled.)"""
    app = await start_app(with_grace(2.0))
    watch = await RawWatch.open(app.grpc_port)
    await watch.until_frame(DATA)  # SERVING: the call is in flight
    app.shutdown.set()
    await watch.until_frame(GOAWAY)  # the drain has begun
    await watch.aclose()  # the client goes away without ending its call
    with trio.fail_after(PROMPT_S):
        await app.stopped.wait()
    assert app.failure is None
    handled = app.running.metrics.registry.get_sample_value(
        "grpc_server_handled_total",
        {
            "grpc_type": "server_stream",
            "grpc_service": "grpc.health.v1.Health",
            "grpc_method": "Watch",
            "grpc_code": "CANCELLED",
        },
    )
    assert handled == 1.0


async def test_client_closing_as_shutdown_begins(start_app: StartApp):
    """Regression: drain flushed a GOAWAY onto a connection that had just closed
    itself, and the ClosedResourceError crashed ``run``."""
    app = await start_app()
    client = await RawWatch.open(app.grpc_port, call=False)
    await client.until_frame(SETTINGS)  # the connection is served
    await client.aclose()
    app.shutdown.set()  # in the same instant, as when a load balancer lets go at SIGTERM
    with trio.fail_after(PROMPT_S):
        await app.stopped.wait()
    assert app.failure is None


# -- the real CLI, in a subprocess ------------------------------------------------


def cli_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GRPC_HOST="127.0.0.1",
        GRPC_PORT="0",
        HTTP_HOST="127.0.0.1",
        HTTP_PORT="0",
        LOG_FORMAT="json",
        LOG_LEVEL="info",
        SHUTDOWN_GRACE_MS="5000",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


CLI = [sys.executable, "-m", "paysim", "serve"]


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = b""
        self.lines: list[bytes] = []

    async def until(self, predicate: Any) -> dict[str, Any]:
        """Read JSON lines until one satisfies ``predicate``; return it."""
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                self.lines.append(line)
                record = json.loads(line)
                if predicate(record):
                    return record  # type: ignore[no-any-return]
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise AssertionError(f"stdout ended; lines so far: {self.lines!r}")
            self._buf += chunk

    async def rest(self) -> list[dict[str, Any]]:
        """Read to EOF; every line must be JSON."""
        while chunk := await self._stream.receive_some(65536):
            self._buf += chunk
        self.lines += [line for line in self._buf.split(b"\n") if line]
        self._buf = b""
        return [json.loads(line) for line in self.lines]


async def test_cli_serves_and_exits_0_on_sigterm():
    proc = await trio.lowlevel.open_process(
        CLI, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        out = LineReader(proc.stdout)
        with trio.fail_after(20):
            ready = await out.until(lambda r: r.get("event") == "paysim serving")
        grpc_port, http_port = ready["grpc_port"], ready["http_port"]
        assert grpc_port > 0
        assert http_port > 0
        assert ready["level"] == "info"

        assert await http_get(http_port, "/health") == (200, HEALTH_BODY)
        assert (await http_get(http_port, "/readyz"))[0] == 200
        channel = open_channel(grpc_port)
        try:
            assert await check_health(channel, "payment.v1.PaymentService") == SERVING

            sent = trio.current_time()
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(5):
                records = await out.rest()
                await proc.wait()
            assert trio.current_time() - sent < 5
        finally:
            channel.close()
        stderr = await proc.stderr.receive_some(65536)
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
    assert proc.returncode == 0, stderr
    events = [r["event"] for r in records]
    assert "signal received; draining" in events
    assert "shutting down" in events
    assert events[-1] == "stopped"
    assert b"Traceback" not in stderr


@pytest.mark.parametrize("variable", ["GRPC_PORT", "HTTP_PORT"])
async def test_cli_refuses_an_occupied_port_naming_it(variable: str) -> None:
    """A port held by another socket, even one that allows SO_REUSEPORT, is refused
    loudly, with the port and the setting that moves it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with trio.fail_after(20):  # a process that shared the port would serve until here
            result = await trio.run_process(
                CLI,
                env=cli_env(**{variable: str(port)}),
                cwd=ROOT,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert result.returncode == 1, result.stderr
    assert f"port {port} ({variable}) is already in use".encode() in result.stderr
    assert f"set {variable} to another port".encode() in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, no traceback
    assert b"paysim serving" not in result.stdout


async def test_cli_bad_configuration_exits_2_naming_the_variable():
    with trio.fail_after(20):
        result = await trio.run_process(
            CLI,
            env=cli_env(GRPC_PORT="eighty"),
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "GRPC_PORT" in lines[0]
