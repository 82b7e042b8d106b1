"""Graceful drain: readiness first, then GOAWAY, pending payments resolved, queues flushed.

Two kinds of test:

* the real CLI in a subprocess (``python -m paysim serve``), with a steady
  load of CreatePaymentIntent from a stock grpcio client, one long-running call
  in flight, a webhook receiver in this process, and real signals. Real time
  cannot be avoided there, so the settings keep it to a few seconds and every
  wait is on a condition with a deadline;
* ``paysim.app.run`` in process under a mock clock, for the exact timing of
  the sequence and for the accounting of what a grace period could not deliver.

The long-running call is written frame by frame (``SlowCall``): its headers go
out at once and its request message only when the test says so, so the server
holds it in flight for as long as the test wants.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc
import hpack
import purerpc
import pytest
import structlog
import trio
import trio.testing
from grpc_health.v1 import health_pb2
from purerpc.rpc import Cardinality, RPCSignature

from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim._proto.proto.payment.v1 import payment_pb2_grpc
from paysim.adapters.recording_notifier import RecordingNotifier
from paysim.app import Running, run
from paysim.config import EventSettings, Settings
from paysim.domain.models import StatusChange
from paysim.drain import FLUSH_SHARE
from paysim.entrypoints.grpc.transport import GrpcLimits, GrpcServer, Registry
from paysim.entrypoints.http import (
    HttpApp,
    HttpLimits,
    HttpRequest,
    HttpResponse,
    json_response,
    serve_http,
)
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics
from paysim.simulator import Simulator
from tests.e2e.test_app_lifecycle import CLI, ROOT, cli_env, http_get
from tests.grpc_helpers import (
    call,
    check_health,
    create_request,
    make_settings,
    open_channel,
    payment_stub,
)
from tests.h2_client import RawClient, frame

CREATE = "/payment.v1.PaymentService/CreatePaymentIntent"
GET_STATUS = "/payment.v1.PaymentService/GetPaymentStatus"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
COMPLETED = "PAYMENT_STATUS_COMPLETED"

# -- a webhook receiver ---------------------------------------------------------------


@dataclass
class Receiver:
    """Records every webhook: (receive time, payment id, status)."""

    got: list[tuple[float, str, str]] = field(default_factory=list)
    port: int = 0

    async def handle(self, request: HttpRequest) -> HttpResponse:
        body = json.loads(request.body)
        self.got.append((trio.current_time(), body["payment_id"], body["status"]))
        return json_response(200, {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def first(self, status: str) -> dict[str, float]:
        """When each payment's ``status`` webhook first arrived, by payment id."""
        out: dict[str, float] = {}
        for at, payment_id, got_status in self.got:
            if got_status == status:
                out.setdefault(payment_id, at)
        return out


async def start_receiver(nursery: trio.Nursery) -> Receiver:
    receiver = Receiver()
    app = HttpApp(Readiness(), Metrics())
    app.add_route("/hook", frozenset({"POST"}), receiver.handle)
    receiver.port = await nursery.start(serve_http, "127.0.0.1", 0, app, HttpLimits())
    return receiver


# -- a call held in flight -------------------------------------------------------------

DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 7, 8
END_STREAM, END_HEADERS = 0x1, 0x4
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    head = len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream_id.to_bytes(4, "big")
    return head + payload


def _literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing (short names and values)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


class SlowCall:
    """One unary call on stream 1 of a hand-driven HTTP/2 connection.

    ``start`` sends the headers; the call stays in flight on the server (its
    request has not arrived) until ``finish`` sends the message. h2 3.x, like
    ``tests.h2_client``, refuses to send or receive anything once a GOAWAY has
    arrived, so the frames are written by hand and the response headers are
    decoded with hpack.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.goaway = trio.Event()
        self.ended = trio.Event()
        self.goaway_at: float | None = None
        self.headers: dict[str, str] = {}
        self.data = bytearray()
        self._decoder = hpack.Decoder()

    @classmethod
    async def start(cls, nursery: trio.Nursery, port: int, path: str) -> SlowCall:
        self = cls(await trio.open_tcp_stream("127.0.0.1", port))
        block = b"".join(
            _literal(k, v)
            for k, v in [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "localhost"),
                ("te", "trailers"),
                ("content-type", "application/grpc"),
            ]
        )
        await self.stream.send_all(
            H2_PREFACE + h2_frame(SETTINGS, 0, 0) + h2_frame(HEADERS, END_HEADERS, 1, block)
        )
        nursery.start_soon(self._read)
        return self

    async def finish(self, message: bytes) -> None:
        await self.stream.send_all(h2_frame(DATA, END_STREAM, 1, frame(message)))

    @property
    def status(self) -> int | None:
        value = self.headers.get("grpc-status")
        return None if value is None else int(value)

    def message(self) -> bytes:
        return bytes(self.data[5:])

    async def _read(self) -> None:
        buf = b""
        try:
            while True:
                while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                    length = int.from_bytes(buf[:3], "big")
                    kind, flags = buf[3], buf[4]
                    sid = int.from_bytes(buf[5:9], "big") & 0x7FFF_FFFF
                    self._on_frame(kind, flags, sid, buf[9 : 9 + length])
                    buf = buf[9 + length :]
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    return
                buf += chunk
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self.ended.set()

    def _on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == GOAWAY:
            self.goaway_at = trio.current_time()
            self.goaway.set()
        elif kind == HEADERS:
            fields = dict(self._decoder.decode(payload))  # decode all: the table is shared
            if sid == 1:
                self.headers.update(fields)
        elif kind == DATA and sid == 1:
            self.data += payload
        elif kind == RST_STREAM and sid == 1:
            self.ended.set()
        if sid == 1 and flags & END_STREAM and kind in (HEADERS, DATA):
            self.ended.set()

    async def aclose(self) -> None:
        await self.stream.aclose()


# -- the real CLI ----------------------------------------------------------------------

DRAIN_DELAY_S = 1.0
GRACE_S = 5.0
PROMPT_S = 0.5  # "at once": half the drain delay, far above the real cost
PACE_S = 0.02  # the load generator's pace (about 50 calls/s): pacing, not synchronisation
DELAYS_MS = (200, 1500, None)  # two due within the grace, one (DEFAULT_DELAY_MS) far beyond


class LogTail:
    """Reads the server's JSON log lines as they come (a full pipe would block it)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self.records: list[dict[str, Any]] = []
        self.ended = trio.Event()
        self._changed = trio.Event()

    async def run(self) -> None:
        buf = b""
        try:
            while chunk := await self._stream.receive_some(65536):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                self.records += [json.loads(line) for line in lines if line]
                self._changed.set()
                self._changed = trio.Event()
        finally:
            self.ended.set()
            self._changed.set()

    async def wait_for(self, event: str, timeout_s: float) -> dict[str, Any]:
        """The first record whose ``event`` is ``event``, waiting for it if need be."""
        with trio.fail_after(timeout_s):
            while True:
                for record in self.records:
                    if record.get("event") == event:
                        return record
                assert not self.ended.is_set(), f"no {event!r} in {self.events()}"
                await self._changed.wait()

    def events(self) -> list[str]:
        return [str(r.get("event")) for r in self.records]

    def ids_in(self, event: str) -> set[str]:
        return {i for r in self.records if r.get("event") == event for i in r["payment_ids"]}


@dataclass
class Server:
    process: trio.Process
    log: LogTail
    stderr: bytearray
    grpc_port: int = 0
    http_port: int = 0


async def _collect(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    while chunk := await stream.receive_some(65536):
        into += chunk


async def start_server(nursery: trio.Nursery, **env: str) -> Server:
    process = await trio.lowlevel.open_process(
        CLI,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(ENVIRONMENT="development", EVENTS_ENABLED="false", **env),
        cwd=ROOT,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    server = Server(process, LogTail(process.stdout), bytearray())
    nursery.start_soon(server.log.run)
    nursery.start_soon(_collect, process.stderr, server.stderr)
    try:
        serving = await server.log.wait_for("paysim serving", 20)
    except BaseException:
        await stop_if_running(process)
        raise
    server.grpc_port, server.http_port = serving["grpc_port"], serving["http_port"]
    return server


async def stop_if_running(process: trio.Process) -> None:
    if process.returncode is None:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


@dataclass
class Attempt:
    started: float
    delay_ms: int | None
    payment_id: str | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK


@dataclass
class Load:
    """A steady stream of CreatePaymentIntent calls on one channel."""

    stub: Any
    webhook_url: str
    attempts: list[Attempt] = field(default_factory=list)
    failed: trio.Event = field(default_factory=trio.Event)
    stop: trio.Event = field(default_factory=trio.Event)
    stopped: trio.Event = field(default_factory=trio.Event)
    progressed: trio.Event = field(default_factory=trio.Event)

    async def create(self, delay_ms: int | None) -> Attempt:
        tags = {} if delay_ms is None else {"delay_ms": str(delay_ms)}
        attempt = Attempt(trio.current_time(), delay_ms)
        request = create_request(
            webhook_url=self.webhook_url, metadata=pb.PaymentMetadata(tags=tags)
        )
        try:
            response = await call(self.stub.CreatePaymentIntent, request, timeout=5)
            attempt.payment_id = response.payment_intent_id
        except grpc.RpcError as exc:
            attempt.code = exc.code()
            self.failed.set()
        self.attempts.append(attempt)
        self.progressed.set()
        self.progressed = trio.Event()
        return attempt

    async def run(self) -> None:
        try:
            for delay_ms in itertools.cycle(DELAYS_MS):
                if self.stop.is_set():
                    return
                await self.create(delay_ms)
                await trio.sleep(PACE_S)
        finally:
            self.stopped.set()

    async def wait_accepted(self, count: int) -> None:
        with trio.fail_after(10):
            while len(self.accepted()) < count:
                await self.progressed.wait()

    def accepted(self) -> list[Attempt]:
        return [a for a in self.attempts if a.payment_id is not None]


async def wait_not_ready(http_port: int) -> float:
    """Poll ``/readyz`` (seen only from outside) until 503; the time it was seen."""
    with trio.fail_after(PROMPT_S):
        while (await http_get(http_port, "/readyz"))[0] != 503:  # noqa: ASYNC110 - no event to wait on across processes
            await trio.sleep(0.01)
    return trio.current_time()


async def test_sigterm_drains_a_loaded_server_and_announces_every_payment(nursery):
    receiver = await start_receiver(nursery)
    server = await start_server(
        nursery,
        DEFAULT_DELAY_MS="30000",
        DRAIN_DELAY_MS=str(int(DRAIN_DELAY_S * 1000)),
        SHUTDOWN_GRACE_MS=str(int(GRACE_S * 1000)),
    )
    channel = open_channel(server.grpc_port)
    load = Load(payment_pb2_grpc.PaymentServiceStub(channel), receiver.url)
    slow: SlowCall | None = None
    try:
        held = await load.create(None)  # the payment the long-running call asks about
        assert held.payment_id is not None
        nursery.start_soon(load.run)
        await load.wait_accepted(10)
        slow = await SlowCall.start(nursery, server.grpc_port, GET_STATUS)

        signalled = trio.current_time()
        server.process.send_signal(signal.SIGTERM)

        # Not ready at once, on both probes; still serving new calls and connections.
        await wait_not_ready(server.http_port)
        fresh = open_channel(server.grpc_port)
        try:
            assert await check_health(fresh) == NOT_SERVING
        finally:
            fresh.close()
        during_delay = await load.create(None)
        assert during_delay.code == grpc.StatusCode.OK
        assert trio.current_time() - signalled < DRAIN_DELAY_S, "the check came too late"

        # After the delay: GOAWAY on open connections, new connections refused.
        with trio.fail_after(DRAIN_DELAY_S + 2):
            await slow.goaway.wait()
        assert slow.goaway_at is not None
        assert slow.goaway_at - signalled >= DRAIN_DELAY_S
        with payment_stub(server.grpc_port) as late:
            with pytest.raises(grpc.RpcError) as refused:
                await call(late.CreatePaymentIntent, create_request(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        # The call held in flight across the GOAWAY completes normally.
        await slow.finish(
            pb.GetPaymentStatusRequest(payment_intent_id=held.payment_id).SerializeToString()
        )
        with trio.fail_after(5):
            await slow.ended.wait()
        assert slow.status == 0, slow.headers
        payment = pb.GetPaymentStatusResponse.FromString(slow.message()).payment
        assert payment.payment_intent_id == held.payment_id

        # The load's own channel is refused too, cleanly; then the load stops.
        with trio.fail_after(5):
            await load.failed.wait()
        load.stop.set()
        with trio.fail_after(10):
            await load.stopped.wait()

        with trio.fail_after(DRAIN_DELAY_S + GRACE_S + 2 - (trio.current_time() - signalled)):
            await server.process.wait()
        stopped = trio.current_time() - signalled
        await server.log.ended.wait()
    finally:
        load.stop.set()
        channel.close()
        if slow is not None:
            await slow.aclose()
        await stop_if_running(server.process)

    assert server.process.returncode == 0, bytes(server.stderr)
    assert stopped < DRAIN_DELAY_S + GRACE_S
    assert b"Traceback" not in server.stderr
    events = server.log.events()
    assert "drained" in events  # finished before the grace ran out
    assert events[-1] == "stopped"

    # No call the server took in failed; whatever it refused was UNAVAILABLE.
    rpcs = [r for r in server.log.records if r.get("event") == "rpc"]
    assert {r["grpc_code"] for r in rpcs} == {"OK"}
    created_ok = [r for r in rpcs if r["grpc_method"].endswith("/CreatePaymentIntent")]
    assert len(created_ok) == len(load.accepted())  # every answer reached its caller
    assert {a.code for a in load.attempts} <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    still_serving = signalled + DRAIN_DELAY_S / 2
    assert all(a.code == grpc.StatusCode.OK for a in load.attempts if a.started < still_serving)

    # Every accepted payment's outcome reached the receiver (or was reported).
    accepted = load.accepted()
    assert {a.delay_ms for a in accepted} == set(DELAYS_MS)  # each kind was exercised
    undelivered = server.log.ids_in("undelivered webhooks at shutdown")
    unresolved = server.log.ids_in("unresolved payments at shutdown")
    completed = receiver.first(COMPLETED)
    assert {a.payment_id for a in accepted} <= set(completed) | undelivered | unresolved
    assert not undelivered
    assert not unresolved

    # Due within the grace: on time. Due beyond it: when the grace window opened.
    window_opens = signalled + DRAIN_DELAY_S
    for attempt in accepted:
        assert attempt.payment_id is not None
        at = completed[attempt.payment_id]
        if attempt.delay_ms is not None:
            assert at >= attempt.started + attempt.delay_ms / 1000
        else:
            assert window_opens <= at < window_opens + GRACE_S * FLUSH_SHARE


async def test_a_second_sigterm_stops_at_once(nursery):
    """The drain would take 20 s; a second signal ends the process at once, with
    143 (128 + SIGTERM: not a graceful stop), and still reports what it leaves."""
    server = await start_server(nursery, DRAIN_DELAY_MS="10000", SHUTDOWN_GRACE_MS="10000")
    try:
        with payment_stub(server.grpc_port) as stub:
            pending = await call(stub.CreatePaymentIntent, create_request())
        server.process.send_signal(signal.SIGTERM)
        await server.log.wait_for("shutting down", PROMPT_S * 4)
        sent = trio.current_time()
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(PROMPT_S * 2):
            await server.process.wait()
        stopped = trio.current_time() - sent
        await server.log.ended.wait()
    finally:
        await stop_if_running(server.process)
    assert server.process.returncode == 128 + signal.SIGTERM, bytes(server.stderr)
    assert stopped < PROMPT_S * 2
    assert b"Traceback" not in server.stderr
    assert "second signal; stopping now" in server.log.events()
    assert server.log.ids_in("unresolved payments at shutdown") == {pending.payment_intent_id}


# -- in process, under a mock clock ----------------------------------------------------


@pytest.fixture
def patient_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 20 ms of real idleness.

    The app talks over loopback sockets; on a busy machine a byte may take a
    moment to arrive, and a jump in that moment would fire a timer early.
    """
    return trio.testing.MockClock(autojump_threshold=0.02)


class TimedNotifier(RecordingNotifier):
    """Also records when (virtual time) each payment's first change was announced."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}

    async def notify(self, change: StatusChange) -> None:
        self.at.setdefault(change.payment.payment_intent_id, trio.current_time())
        await super().notify(change)


@dataclass
class InProcess:
    shutdown: trio.Event = field(default_factory=trio.Event)
    stopped: trio.Event = field(default_factory=trio.Event)
    stopped_at: float | None = None
    running: Running | None = None

    @property
    def grpc_port(self) -> int:
        assert self.running is not None
        return self.running.grpc_port

    async def stop(self) -> float:
        """Begin the shutdown; wait until ``run`` returned. The time shutdown began."""
        began = trio.current_time()
        self.shutdown.set()
        with trio.fail_after(60):
            await self.stopped.wait()
        return began


async def start_in_process(
    nursery: trio.Nursery,
    settings: Settings,
    *,
    notifier: RecordingNotifier | None = None,
    events_client: Any = None,
) -> InProcess:
    app = InProcess()

    async def serve(*, task_status: trio.TaskStatus[Running]) -> None:
        try:
            await run(
                settings,
                shutdown=app.shutdown,
                notifier=notifier,
                events_client=events_client,
                task_status=task_status,
            )
        finally:
            app.stopped_at = trio.current_time()
            app.stopped.set()

    app.running = await nursery.start(serve)
    return app


def drain_settings(**changes: Any) -> Settings:
    return dataclasses.replace(make_settings(), **changes)


def with_delay(delay_ms: int, **fields: Any) -> Any:
    return create_request(metadata=pb.PaymentMetadata(tags={"delay_ms": str(delay_ms)}), **fields)


async def create_intents(nursery: trio.Nursery, port: int, *requests: Any) -> list[str]:
    """CreatePaymentIntent for each request over one raw connection, closed before returning."""
    client = await RawClient.connect(nursery, port)
    try:
        ids = []
        for request in requests:
            response = await client.call(CREATE, frame(request.SerializeToString()))
            assert response.status == 0, response.message
            created = pb.CreatePaymentIntentResponse.FromString(response.messages()[0])
            ids.append(created.payment_intent_id)
        return ids
    finally:
        await client.aclose()


async def test_drain_sequence_keeps_due_times_and_resolves_the_rest_early(nursery, patient_clock):
    """Delay 0.5 s, grace 4 s: the window opens at +0.5 and timers due by +2.5 keep
    their time; every other one, also one armed by a call still in flight during
    the drain, fires at +0.5; ``run`` returns when the last on-time one fired."""
    notifier = TimedNotifier()
    app = await start_in_process(
        nursery, drain_settings(drain_delay_s=0.5, shutdown_grace_s=4.0), notifier=notifier
    )
    assert app.running is not None
    port = app.grpc_port
    on_time, too_late, beyond = await create_intents(
        nursery, port, with_delay(2000), with_delay(3000), create_request()
    )
    in_flight = await SlowCall.start(nursery, port, CREATE)
    began = trio.current_time()
    app.shutdown.set()

    assert (await http_get(app.running.http_port, "/readyz"))[0] == 503
    assert not app.running.readiness.is_ready
    assert trio.current_time() == began  # at once
    await trio.sleep(0.25)  # halfway through the delay: still serving
    (during_delay,) = await create_intents(nursery, port, create_request())

    with trio.fail_after(10):
        await in_flight.goaway.wait()
    opens = began + 0.5
    assert in_flight.goaway_at == pytest.approx(opens)
    await in_flight.finish(create_request().SerializeToString())
    with trio.fail_after(10):
        await in_flight.ended.wait()
    assert in_flight.status == 0, in_flight.headers
    late = pb.CreatePaymentIntentResponse.FromString(in_flight.message()).payment_intent_id
    await in_flight.aclose()
    with trio.fail_after(10):
        await app.stopped.wait()

    assert notifier.at[on_time] == pytest.approx(began + 2.0)
    for early in (too_late, beyond, during_delay, late):
        assert notifier.at[early] == pytest.approx(opens)
    assert app.stopped_at == pytest.approx(began + 2.0)
    assert app.running.simulator.pending == 0


async def serve_silently(*, task_status: trio.TaskStatus[int]) -> None:
    """A webhook receiver that accepts every connection and never answers."""

    async def hold(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(hold, listeners)


class StuckEvents:
    """A boto3 ``events`` client whose PutEvents never returns (until released)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def put_events(self, **_: Any) -> dict[str, Any]:
        self.release.wait()
        return {"FailedEntryCount": 0, "Entries": []}


def shutdown_counts(app: InProcess) -> dict[str, float | None]:
    assert app.running is not None
    get = app.running.metrics.registry.get_sample_value
    return {
        "webhook": get("paysim_shutdown_undelivered_total", {"channel": "webhook"}),
        "event": get("paysim_shutdown_undelivered_total", {"channel": "event"}),
        "unresolved": get("paysim_shutdown_unresolved_payments_total"),
    }


async def test_what_the_grace_cannot_deliver_is_logged_and_counted(nursery, patient_clock):
    receiver_port = await nursery.start(serve_silently)
    events = StuckEvents()
    settings = drain_settings(
        drain_delay_s=0.0, shutdown_grace_s=2.0, events=EventSettings(call_timeout_s=30.0)
    )
    hook = f"http://127.0.0.1:{receiver_port}/hook"
    try:
        with structlog.testing.capture_logs() as logs:
            app = await start_in_process(nursery, settings, events_client=events)
            assert shutdown_counts(app) == {"webhook": 0.0, "event": 0.0, "unresolved": 0.0}
            ids = await create_intents(
                nursery, app.grpc_port, *[create_request(webhook_url=hook) for _ in range(3)]
            )
            began = await app.stop()
    finally:
        events.release.set()

    assert app.stopped_at == pytest.approx(began + 2.0)  # the grace, to the tick
    by_event = {r["event"]: r for r in logs if "payment_ids" in r}
    webhooks = by_event["undelivered webhooks at shutdown"]
    assert webhooks["log_level"] == "warning"
    assert webhooks["channel"] == "webhook"
    assert sorted(webhooks["payment_ids"]) == sorted(ids)
    assert webhooks["count"] == 3
    published = by_event["undelivered events at shutdown"]
    assert set(ids) <= set(published["payment_ids"])
    assert "unresolved payments at shutdown" not in by_event  # every payment did resolve
    assert shutdown_counts(app) == {
        "webhook": 3.0,
        "event": float(published["count"]),
        "unresolved": 0.0,
    }


async def test_handover_policy_leaves_pending_payments_to_another_replica(nursery, patient_clock):
    """Not selectable yet (config refuses it without a shared store), but a policy:
    nothing is resolved early, nothing waited for, and the ids are logged."""
    notifier = TimedNotifier()
    settings = drain_settings(
        drain_delay_s=0.0, shutdown_grace_s=4.0, pending_on_shutdown="handover"
    )
    with structlog.testing.capture_logs() as logs:
        app = await start_in_process(nursery, settings, notifier=notifier)
        (pending,) = await create_intents(nursery, app.grpc_port, create_request())
        began = await app.stop()
    assert app.stopped_at == pytest.approx(began)
    assert notifier.changes == []
    (handed,) = [r for r in logs if r["event"] == "pending payments left for another replica"]
    assert handed["log_level"] == "info"
    assert handed["payment_ids"] == [pending]
    assert shutdown_counts(app)["unresolved"] == 0.0


async def test_simulator_resolve_by_and_wait_idle(nursery, autojump_clock):
    fired: dict[str, float] = {}
    release = trio.Event()

    async def fire(payment_id: str) -> None:
        fired[payment_id] = trio.current_time()
        if payment_id == "slow":
            await release.wait()  # a fire still running counts as not idle

    simulator = Simulator(nursery, 10)
    start = trio.current_time()
    simulator.schedule("due_soon", 1.0, fire)
    simulator.schedule("due_late", 5.0, fire)
    simulator.schedule("slow", 1.5, fire)
    assert simulator.resolve_by(start + 2.0) == ["due_late"]
    simulator.schedule("armed_after", 10.0, fire)  # beyond the cutoff: fires at once
    simulator.schedule("armed_within", 0.5, fire)  # within it: keeps its time

    async def wait_then_release() -> None:
        await trio.sleep(3.0)
        assert simulator.pending_ids() == ["slow"]
        release.set()

    nursery.start_soon(wait_then_release)
    await simulator.wait_idle()
    assert trio.current_time() == start + 3.0
    assert fired == {
        "due_late": start,
        "armed_after": start,
        "armed_within": start + 0.5,
        "due_soon": start + 1.0,
        "slow": start + 1.5,
    }
    assert simulator.pending_ids() == []
    await simulator.wait_idle()  # idle already: returns at once


class Big(purerpc.Servicer):  # type: ignore[misc]
    """Answers every call with a message far larger than the socket buffers."""

    async def Get(self, req: Any) -> Any:
        return pb.GetPaymentStatusResponse(payment=pb.Payment(payment_intent_id="x" * BIG_BYTES))

    @property
    def service(self) -> purerpc.Service:
        svc = purerpc.Service("test.Big")
        sig = RPCSignature(
            Cardinality.UNARY_UNARY, pb.GetPaymentStatusRequest, pb.GetPaymentStatusResponse
        )
        svc.add_method("Get", self.Get, sig)
        return svc


BIG_BYTES = 8 * 1024 * 1024
MAX_WINDOW = 2**31 - 1


async def test_drain_survives_a_client_that_stopped_reading(nursery):
    """Regression: with the writer waiting on a client that does not read, the
    drain's last flush sent from a second task, got BusyResourceError, and
    crashed the shutdown. It now leaves the sending to the writer (bounded)."""
    registry = Registry()
    registry.add(Big())
    server = GrpcServer(registry, GrpcLimits(max_message_bytes=2 * BIG_BYTES), Metrics())
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stalled = trio.SocketStream(sock)
    block = b"".join(
        _literal(k, v)
        for k, v in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/test.Big/Get"),
            (":authority", "localhost"),
            ("te", "trailers"),
            ("content-type", "application/grpc"),
        ]
    )
    initial_window = (4).to_bytes(2, "big") + MAX_WINDOW.to_bytes(4, "big")
    await stalled.send_all(
        H2_PREFACE
        + h2_frame(SETTINGS, 0, 0, initial_window)
        + h2_frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - 65535).to_bytes(4, "big"))
        + h2_frame(HEADERS, END_HEADERS, 1, block)
        + h2_frame(DATA, END_STREAM, 1, frame(b""))
    )
    # The answer is produced and handed to the writer, which now waits on the
    # client; the call itself is over.
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    (connection,) = server.connections
    assert not connection.calls
    with trio.fail_after(5):
        await server.drain()
    await stalled.aclose()
