"""End to end on loopback with the real parts: the server, moto's server as AWS,
a real HTTP webhook receiver, and the reservation worker.

Retry *timing* is proven with virtual time in test_webhook_dispatcher.py; here
the fast retry schedule (tens of milliseconds) keeps the few real waits short.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import trio

from paysim._proto.proto.common.v1 import types_pb2
from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim._proto.proto.payment.v1 import payment_pb2_grpc
from paysim.adapters.aws import make_client
from paysim.app import Running, run
from paysim.config import Settings, WebhookSettings
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
from paysim.worker.app import run_worker
from tests.grpc_helpers import make_settings

pytest_plugins = ["tests.moto_fixtures"]

SECRET = "e2e-secret"


@dataclass
class Receiver:
    """A real HTTP webhook receiver; ``answers`` scripts its first responses."""

    answers: list[int] = field(default_factory=list)
    deliveries: list[HttpRequest] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)
    port: int = 0

    async def handle(self, request: HttpRequest) -> HttpResponse:
        self.deliveries.append(request)
        self.changed.set()
        self.changed = trio.Event()
        status = self.answers.pop(0) if self.answers else 200
        return json_response(status, {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(20):
            while not predicate():
                await self.changed.wait()

    def ok(self) -> list[HttpRequest]:
        return [d for d in self.deliveries if d.header(b"x-webhook-attempt") is not None]


async def start_receiver(nursery: trio.Nursery, receiver: Receiver, port: int = 0) -> None:
    app = HttpApp(Readiness(), Metrics())
    app.add_route("/hook", frozenset({"POST"}), receiver.handle)
    receiver.port = await nursery.start(serve_http, "127.0.0.1", port, app, HttpLimits())


def e2e_settings(aws: Any, **webhook: Any) -> Settings:
    base = make_settings()
    return dataclasses.replace(
        base,
        aws=aws,
        simulation=dataclasses.replace(
            base.simulation, default_delay_s=0.01, delay_scenario_s=0.02, intent_ttl_s=0.3
        ),
        webhook=WebhookSettings(
            secrets=(SECRET,), retry_schedule="fast", max_attempts=10, **webhook
        ),
    )


@dataclass
class Stack:
    running: Running
    stub: Any
    shutdown: trio.Event


@pytest.fixture
async def stack_factory(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Any]]:
    stacks: list[tuple[Stack, grpc.Channel]] = []

    async def start(settings: Settings, events_client: Any) -> Stack:
        shutdown = trio.Event()

        async def app(*, task_status: trio.TaskStatus[Running]) -> None:
            await run(
                settings,
                shutdown=shutdown,
                events_client=events_client,
                task_status=task_status,
            )

        running: Running = await nursery.start(app)
        channel = grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}")
        stack = Stack(running, payment_pb2_grpc.PaymentServiceStub(channel), shutdown)
        stacks.append((stack, channel))
        return stack

    yield start
    for stack, channel in stacks:
        stack.shutdown.set()
        channel.close()


async def create(stack: Stack, **fields: Any) -> Any:
    request = pb.CreatePaymentIntentRequest(
        reservation_id=fields.pop("reservation_id", "rsv_1"),
        user_id="user_1",
        amount=types_pb2.Money(amount=100_000, currency="KRW"),
        **fields,
    )
    return await trio.to_thread.run_sync(stack.stub.CreatePaymentIntent, request)


async def eventually(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Wait for a condition seen only from outside (a metric): poll, bounded."""
    with trio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 - no event to wait on for a metric
            await trio.sleep(0.01)


def independent_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


async def receive_all(sqs: Any, queue_url: str, want: int) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    with trio.fail_after(20):
        while len(bodies) < want:
            resp = await trio.to_thread.run_sync(
                lambda: sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
            )
            for message in resp.get("Messages", []):
                bodies.append(json.loads(message["Body"]))
                await trio.to_thread.run_sync(
                    functools.partial(
                        sqs.delete_message,
                        QueueUrl=queue_url,
                        ReceiptHandle=message["ReceiptHandle"],
                    )
                )
    return bodies


SCENARIOS = [
    (pb.PAYMENT_SCENARIO_APPROVE, "PAYMENT_STATUS_COMPLETED"),
    (pb.PAYMENT_SCENARIO_FAIL, "PAYMENT_STATUS_FAILED"),
    (pb.PAYMENT_SCENARIO_DELAY, "PAYMENT_STATUS_COMPLETED"),
    (pb.PAYMENT_SCENARIO_TIMEOUT, "PAYMENT_STATUS_EXPIRED"),
]


async def test_every_scenario_is_signed_and_reaches_sqs(
    nursery, stack_factory, aws_settings, aws_resources, events_client, sqs_client
):
    receiver = Receiver()
    await start_receiver(nursery, receiver)
    stack = await stack_factory(e2e_settings(aws_settings), events_client)
    intents = {}
    for scenario, expected in SCENARIOS:
        intent = await create(
            stack, scenario=scenario, webhook_url=receiver.url, reservation_id=f"rsv_{scenario}"
        )
        intents[intent.payment_intent_id] = expected
    await receiver.wait_for(lambda: len(receiver.deliveries) >= len(SCENARIOS))

    for delivery in receiver.deliveries:
        body = json.loads(delivery.body)
        assert (
            delivery.header(b"x-webhook-signature") == independent_signature(delivery.body).encode()
        )
        assert body["status"] == intents[body["payment_id"]]

    events = await receive_all(sqs_client, aws_resources.queue_url, len(SCENARIOS))
    by_payment = {e["detail"]["payment_id"]: e for e in events}
    assert set(by_payment) == set(intents)
    for payment_id, envelope in by_payment.items():
        assert envelope["detail-type"] == "Payment Status Updated"
        assert envelope["source"] == aws_settings.event_source
        detail = envelope["detail"]
        assert detail["status"] == intents[payment_id]
        assert detail["user_id"] == "user_1"
        assert detail["event_type"] == "payment.status_updated"


async def test_events_go_out_without_a_webhook_url(
    stack_factory, aws_settings, aws_resources, events_client, sqs_client
):
    stack = await stack_factory(e2e_settings(aws_settings), events_client)
    intent = await create(stack, scenario=pb.PAYMENT_SCENARIO_APPROVE)
    (event,) = await receive_all(sqs_client, aws_resources.queue_url, 1)
    assert event["detail"]["payment_id"] == intent.payment_intent_id


async def test_receiver_failing_first_attempts_gets_the_same_id(
    nursery, stack_factory, aws_settings, events_client
):
    receiver = Receiver(answers=[500, 503, 500])
    await start_receiver(nursery, receiver)
    stack = await stack_factory(e2e_settings(aws_settings), events_client)
    await create(stack, scenario=pb.PAYMENT_SCENARIO_APPROVE, webhook_url=receiver.url)
    await receiver.wait_for(lambda: len(receiver.deliveries) >= 4)
    ids = {d.header(b"x-webhook-id") for d in receiver.deliveries}
    attempts = [d.header(b"x-webhook-attempt") for d in receiver.deliveries]
    assert len(ids) == 1
    assert attempts == [b"1", b"2", b"3", b"4"]


async def test_receiver_down_for_a_while_gets_everything(
    nursery, stack_factory, aws_settings, events_client
):
    # Reserve a port, keep nothing listening on it: connections are refused.
    probe = Receiver()
    async with trio.open_nursery() as probe_nursery:
        await start_receiver(probe_nursery, probe)
        probe_nursery.cancel_scope.cancel()
    stack = await stack_factory(e2e_settings(aws_settings), events_client)
    created = [
        await create(stack, scenario=pb.PAYMENT_SCENARIO_APPROVE, webhook_url=probe.url)
        for _ in range(5)
    ]
    metrics = stack.running.metrics

    def errors() -> float:
        value = metrics.registry.get_sample_value(
            "paysim_webhook_attempts_total", {"result": "error"}
        )
        return value or 0.0

    await eventually(lambda: errors() >= 5)
    receiver = Receiver()
    await start_receiver(nursery, receiver, port=probe.port)
    await receiver.wait_for(lambda: len(receiver.deliveries) >= 5)
    got = {json.loads(d.body)["payment_id"] for d in receiver.deliveries}
    assert got == {c.payment_intent_id for c in created}


async def test_410_stops_retries(nursery, stack_factory, aws_settings, events_client):
    receiver = Receiver(answers=[410])
    await start_receiver(nursery, receiver)
    stack = await stack_factory(e2e_settings(aws_settings), events_client)
    intent = await create(stack, scenario=pb.PAYMENT_SCENARIO_APPROVE, webhook_url=receiver.url)
    await receiver.wait_for(lambda: len(receiver.deliveries) >= 1)
    registry = stack.running.metrics.registry
    await eventually(
        lambda: (
            registry.get_sample_value("paysim_webhook_deliveries_total", {"outcome": "gone"}) == 1
        )
    )
    assert len(receiver.deliveries) == 1
    assert json.loads(receiver.deliveries[0].body)["payment_id"] == intent.payment_intent_id


async def test_ssrf_to_cloud_metadata_is_refused(stack_factory, aws_settings, events_client):
    stack = await stack_factory(e2e_settings(aws_settings), events_client)
    with pytest.raises(grpc.RpcError) as info:
        await create(stack, webhook_url="http://169.254.169.254/latest/meta-data/")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "webhook_url" in info.value.details()


async def test_eventbridge_down_for_a_while_loses_no_event(
    nursery, stack_factory, aws_settings, aws_resources, moto_url, sqs_client
):
    proxy = FlakyProxy(upstream_port=int(moto_url.rsplit(":", 1)[1]))
    proxy_port = await nursery.start(proxy.serve)
    proxy.down = True
    events = await trio.to_thread.run_sync(
        lambda: make_client("events", aws_settings, f"http://127.0.0.1:{proxy_port}")
    )
    stack = await stack_factory(e2e_settings(aws_settings), events)
    created = [await create(stack, scenario=pb.PAYMENT_SCENARIO_APPROVE) for _ in range(12)]
    registry = stack.running.metrics.registry
    # Several calls failed against the dead endpoint, and nothing was lost meanwhile.
    await eventually(lambda: proxy.refused >= 3)
    assert registry.get_sample_value("paysim_events_backlog") == 12
    assert (registry.get_sample_value("paysim_events_published_total") or 0) == 0
    proxy.down = False
    got = await receive_all(sqs_client, aws_resources.queue_url, 12)
    assert {e["detail"]["payment_id"] for e in got} == {c.payment_intent_id for c in created}


@dataclass
class FlakyProxy:
    """A TCP proxy to moto that drops every connection while ``down``."""

    upstream_port: int
    down: bool = False
    refused: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.down:
            self.refused += 1
            await client.aclose()
            return
        upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
        async with client, upstream, trio.open_nursery() as n:
            n.start_soon(_pipe, client, upstream, n.cancel_scope)
            n.start_soon(_pipe, upstream, client, n.cancel_scope)


async def _pipe(src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope) -> None:
    try:
        while data := await src.receive_some(65536):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()


async def test_worker_confirms_and_cancels_reservations_through_the_bus(
    nursery, stack_factory, aws_settings, aws_resources, events_client, sqs_client
):
    """Server -> EventBridge rule -> SQS -> paysim worker -> reservation service."""
    calls: list[tuple[str, Any]] = []
    changed = trio.Event()

    class Reservations(HttpApp):
        async def handle(self, request: HttpRequest) -> HttpResponse:
            prefix = "/internal/reservations/"
            if request.method == "PATCH" and request.path.startswith(prefix):
                nonlocal changed
                calls.append((request.path.removeprefix(prefix), json.loads(request.body)))
                changed.set()
                changed = trio.Event()
                return json_response(200, {})
            return await super().handle(request)

    reservations_port = await nursery.start(
        serve_http, "127.0.0.1", 0, Reservations(Readiness(), Metrics()), HttpLimits()
    )
    settings = e2e_settings(aws_settings)
    settings = dataclasses.replace(
        settings,
        worker=dataclasses.replace(
            settings.worker,
            queue_url=aws_resources.queue_url,
            reservation_api_url=f"http://127.0.0.1:{reservations_port}",
            http_host="127.0.0.1",
            http_port=0,
            wait_time_s=1,
        ),
    )
    stack = await stack_factory(settings, events_client)
    worker_shutdown = trio.Event()

    async def worker(*, task_status: trio.TaskStatus[Any]) -> None:
        await run_worker(
            settings,
            shutdown=worker_shutdown,
            handle_signals=False,
            sqs_client=sqs_client,
            task_status=task_status,
        )

    await nursery.start(worker)
    try:
        await create(stack, scenario=pb.PAYMENT_SCENARIO_APPROVE, reservation_id="rsv_ok")
        await create(stack, scenario=pb.PAYMENT_SCENARIO_FAIL, reservation_id="rsv_declined")
        with trio.fail_after(20):
            while len(calls) < 2:
                await changed.wait()
        assert sorted(calls) == [
            ("rsv_declined", {"status": "CANCELLED"}),
            ("rsv_ok", {"status": "CONFIRMED"}),
        ]
        # Handled messages were deleted: the queue drains to empty.
        await eventually(lambda: _visible(sqs_client, aws_resources.queue_url) == 0)
    finally:
        worker_shutdown.set()


def _visible(sqs: Any, queue_url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )
