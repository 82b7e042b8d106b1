"""The reservation worker: parsing, batching, and the whole path on loopback.

Unit tests drive ``ReservationWorker`` with ``FakeSqs`` (an in-memory SQS
client, called from the worker's threads like boto3) and ``FakeHttp`` (the
worker's ``ReservationHttp`` port in memory). Integration tests use moto's server as SQS (from
``tests.moto_fixtures``: each test makes its own queue and DLQ with a redrive
policy of 3 receives) and ``ReservationStub``, a real HTTP server on loopback
(paysim's own ``HttpApp``/``serve_http``) that records each
``PATCH /internal/reservations/{id}``, reached through the real
``Http1Client``.

Real time: moto honours visibility timeouts in real time, and its long polls
check for visible messages once a second. The DLQ tests use a queue with
VisibilityTimeout 0 (redelivered at once: well under a second each); only
``test_failure_is_redelivered_after_the_visibility_timeout`` waits for a real
1 s timeout (about 1 to 2 s). The worker polls with WaitTimeSeconds=1, so a
test's teardown leaves at most a 1 s long poll running in a thread.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import structlog
import trio

from paysim import __version__
from paysim.adapters.http1_client import Http1Client, Http1Error
from paysim.backoff import Backoff
from paysim.config import Settings, WorkerSettings
from paysim.domain.event_parsing import Malformed, parse_event
from paysim.entrypoints.http import (
    HttpApp,
    HttpLimits,
    HttpRequest,
    HttpResponse,
    json_response,
    serve_http,
)
from paysim.observability.health import Readiness, ServingState
from paysim.observability.metrics import Metrics
from paysim.worker.app import WorkerRunning, run_worker, worker_main
from paysim.worker.consumer import ConsumerOptions, ReservationWorker
from paysim.worker.metrics import WorkerMetrics
from paysim.worker.reservations import make_http_client
from paysim.worker.sqs_queue import SQS_RETRY

pytest_plugins = ["tests.moto_fixtures"]

SOURCE = "payment-sim-api"
PREFIX = "/internal/reservations/"
WAIT_S = 10.0  # the bound on every wait for the worker in these tests


# -- messages ------------------------------------------------------------------------


def envelope(
    status: Any = "PAYMENT_STATUS_COMPLETED",
    *,
    event_id: str | None = None,
    reservation_id: str = "rsv-1",
    source: str = SOURCE,
    **detail: Any,
) -> dict[str, Any]:
    """The EventBridge envelope of a ``Payment Status Updated`` event, as SQS delivers it."""
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "Payment Status Updated",
        "source": source,
        "account": "123456789012",
        "time": "2024-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "payment_id": "pay_1",
            "reservation_id": reservation_id,
            "user_id": "user-1",
            "status": status,
            "amount": 100000,
            "currency": "KRW",
            "timestamp": 1700000000,
            "event_type": "payment.status_updated",
            **detail,
        },
    }


def body(status: Any = "PAYMENT_STATUS_COMPLETED", **kwargs: Any) -> str:
    return json.dumps(envelope(status, **kwargs))


def sample(worker: ReservationWorker, name: str, **labels: str) -> float:
    return worker.metrics.registry.get_sample_value(name, labels) or 0.0


def handled(worker: ReservationWorker, outcome: str) -> float:
    return sample(worker, "paysim_worker_messages_handled_total", outcome=outcome)


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = WAIT_S
) -> None:
    with trio.fail_after(timeout):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(0.02)


# -- parsing -------------------------------------------------------------------------


def test_parse_event_reads_the_contract_fields():
    event = parse_event(body("PAYMENT_STATUS_FAILED", event_id="ev-1", extra="ignored"), SOURCE)
    assert (event.event_id, event.reservation_id, event.status) == (
        "ev-1",
        "rsv-1",
        "PAYMENT_STATUS_FAILED",
    )
    assert (event.amount, event.currency, event.timestamp) == (100000, "KRW", 1700000000)
    assert event.decision == "CANCELLED"


@pytest.mark.parametrize(
    ("status", "decision"),
    [
        ("PAYMENT_STATUS_COMPLETED", "CONFIRMED"),
        ("PAYMENT_STATUS_FAILED", "CANCELLED"),
        ("PAYMENT_STATUS_CANCELLED", "CANCELLED"),
        ("PAYMENT_STATUS_EXPIRED", "CANCELLED"),
        ("PAYMENT_STATUS_PENDING", None),
        ("PAYMENT_STATUS_PROCESSING", None),
        ("PAYMENT_STATUS_REFUNDED", None),
        ("PAYMENT_STATUS_DISPUTED", None),  # a future status: acknowledged, not malformed
    ],
)
def test_decision_table(status, decision):
    assert parse_event(body(status), SOURCE).decision == decision


def _without(key: str) -> str:
    env = envelope()
    del env[key]
    return json.dumps(env)


def _detail_without(key: str) -> str:
    env = envelope()
    del env["detail"][key]
    return json.dumps(env)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "json"),
        ("[1, 2]", "json"),
        ('"a string"', "json"),
        (_without("id"), "envelope"),
        (json.dumps({**envelope(), "id": ""}), "envelope"),
        (json.dumps({**envelope(), "id": 7}), "envelope"),
        (_without("detail"), "envelope"),
        (json.dumps({**envelope(), "detail": json.dumps(envelope()["detail"])}), "envelope"),
        (json.dumps({**envelope(), "detail-type": "Other"}), "detail_type"),
        (_without("detail-type"), "detail_type"),
        (body(source="someone-else"), "source"),
        (_detail_without("reservation_id"), "detail"),
        (body(reservation_id=""), "detail"),
        (body(reservation_id=".."), "detail"),
        (body(reservation_id="a\nb"), "detail"),
        (body(reservation_id="r" * 129), "detail"),
        (body(reservation_id=42), "detail"),
        (_detail_without("payment_id"), "detail"),
        (body(user_id=None), "detail"),
        (body("COMPLETED"), "detail"),
        (body("payment_status_completed"), "detail"),
        (body(status=3), "detail"),
        (body(amount="100000"), "detail"),
        (body(amount=True), "detail"),
        (body(amount=-1), "detail"),
        (body(currency=None), "detail"),
        (body(timestamp=1.5), "detail"),
        (_detail_without("timestamp"), "detail"),
        (body(event_type="payment.created"), "detail"),
    ],
)
def test_parse_event_rejects(raw, reason):
    with pytest.raises(Malformed) as info:
        parse_event(raw, SOURCE)
    assert info.value.reason == reason


# -- unit: metrics and backoff -------------------------------------------------------


def test_worker_metrics_hold_the_worker_series_and_not_the_api_ones():
    scrape = WorkerMetrics().render()[0].decode()
    assert "paysim_worker_messages_in_flight 0.0" in scrape
    assert 'paysim_worker_failures_total{reason="timeout"} 0.0' in scrape
    assert f'paysim_build_info{{version="{__version__}"}} 1.0' in scrape
    assert "process_" in scrape or "python_info" in scrape
    assert "paysim_payments_" not in scrape
    assert "grpc_server_" not in scrape
    assert "paysim_shutdown_" not in scrape


class _Top:
    """A jitter source that always draws the top of the range: the schedule's bound."""

    def uniform(self, low: float, high: float) -> float:
        return high


def test_sqs_retries_back_off_with_full_jitter_from_200ms_doubling_to_10s():
    backoff = Backoff(SQS_RETRY, _Top())  # type: ignore[arg-type]
    bounds = [backoff.failed() for _ in range(8)]
    assert bounds == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    backoff.reset()
    assert backoff.failed() == 0.2


# -- unit: a fake SQS client and a fake HTTP client -------------------------------------


class FakeSqs:
    """An in-memory SQS client with boto3's method names; thread-safe, no visibility clock."""

    def __init__(self, bodies: Sequence[str] = ()) -> None:
        self._lock = threading.Lock()
        self._n = 0
        self.visible = [self._message(b) for b in bodies]
        self.invisible: dict[str, dict[str, Any]] = {}
        self.delete_calls: list[list[str]] = []
        self.release_calls: list[list[str]] = []
        self.fail_delete: set[str] = set()  # receipt handles that DeleteMessageBatch refuses
        self.block: threading.Event | None = None  # when set (not None), receives wait for it
        self.receiving = threading.Event()  # set when a receive call is waiting on ``block``

    def _message(self, body: str) -> dict[str, Any]:
        self._n += 1
        return {"MessageId": f"m{self._n}", "ReceiptHandle": f"rh{self._n}", "Body": body}

    def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:
        return {"Attributes": {"VisibilityTimeout": "30", "RedrivePolicy": "{}"}}

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        if self.block is not None:
            self.receiving.set()
            self.block.wait(5)
        with self._lock:
            batch = self.visible[: kwargs["MaxNumberOfMessages"]]
            del self.visible[: len(batch)]
            for m in batch:
                self.invisible[m["ReceiptHandle"]] = m
        if not batch:
            time.sleep(0.005)  # a short poll on an empty queue
        return {"Messages": [{**m, "Attributes": {"ApproximateReceiveCount": "1"}} for m in batch]}

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        entries = kwargs["Entries"]
        assert 1 <= len(entries) <= 10
        with self._lock:
            self.delete_calls.append([e["ReceiptHandle"] for e in entries])
            failed = [e for e in entries if e["ReceiptHandle"] in self.fail_delete]
            for e in entries:
                if e not in failed:
                    del self.invisible[e["ReceiptHandle"]]
        return {
            "Successful": [{"Id": e["Id"]} for e in entries if e not in failed],
            "Failed": [
                {"Id": e["Id"], "SenderFault": True, "Code": "ReceiptHandleIsInvalid"}
                for e in failed
            ],
        }

    def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]:
        entries = kwargs["Entries"]
        assert all(e["VisibilityTimeout"] == 0 for e in entries)
        with self._lock:
            self.release_calls.append([e["ReceiptHandle"] for e in entries])
        return {"Successful": [{"Id": e["Id"]} for e in entries], "Failed": []}

    @property
    def deleted(self) -> list[str]:
        return [rh for call in self.delete_calls for rh in call if rh not in self.fail_delete]


def unit_settings(**overrides: Any) -> WorkerSettings:
    base = WorkerSettings(
        queue_url="https://sqs.test/123/q",
        reservation_api_url="http://reservations.test",
        reservation_timeout_s=0.5,
        pollers=2,
        concurrency=16,
        wait_time_s=0,
    )
    return dataclasses.replace(base, **overrides)


@dataclasses.dataclass(frozen=True)
class FakeRequest:
    method: str
    url: str
    body: bytes
    headers: dict[str, str]  # names in lower case
    idempotent: bool | None


@dataclasses.dataclass(frozen=True)
class FakeAnswer:
    status: int


Handler = Callable[[FakeRequest], Awaitable[FakeAnswer]]


class FakeHttp:
    """The worker's ``ReservationHttp`` in memory: every request goes to ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
        idempotent: bool | None = None,
    ) -> FakeAnswer:
        lowered = {name.lower(): value for name, value in headers}
        return await self.handler(FakeRequest(method, url, body, lowered, idempotent))


@pytest.fixture
async def run_fake(
    nursery: trio.Nursery,
) -> AsyncIterator[Callable[..., Awaitable[ReservationWorker]]]:
    """``await run_fake(sqs, settings, handler)``: a worker on ``FakeSqs`` and ``FakeHttp``."""

    async def start(sqs: FakeSqs, settings: WorkerSettings, handler: Handler) -> ReservationWorker:
        worker = ReservationWorker(
            settings, sqs, FakeHttp(handler), options=ConsumerOptions(sqs_timeout_s=2.0)
        )
        await nursery.start(worker.run)
        return worker

    yield start
    nursery.cancel_scope.cancel()


async def ok(request: FakeRequest) -> FakeAnswer:
    return FakeAnswer(204)


async def test_deletes_go_in_batches_of_at_most_ten(run_fake):
    sqs = FakeSqs([body(reservation_id=f"r{i}") for i in range(45)])
    worker = await run_fake(sqs, unit_settings(), ok)
    await wait_until(lambda: len(sqs.deleted) == 45 and worker.in_flight == 0)
    assert all(1 <= len(call) <= 10 for call in sqs.delete_calls)
    assert len(sqs.delete_calls) < 45  # batches did form
    assert sorted(sqs.deleted) == sorted(f"rh{i}" for i in range(1, 46))
    assert handled(worker, "confirmed") == 45


async def test_failed_delete_entries_are_counted(run_fake):
    sqs = FakeSqs([body(reservation_id="a"), body(reservation_id="b")])
    sqs.fail_delete = {"rh2"}
    worker = await run_fake(sqs, unit_settings(), ok)
    await wait_until(lambda: sum(map(len, sqs.delete_calls)) == 2 and worker.in_flight == 0)
    assert sample(worker, "paysim_worker_delete_failures_total") == 1
    assert sqs.deleted == ["rh1"]
    assert list(sqs.invisible) == ["rh2"]  # it will come back; the dedup then deletes it


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (FakeAnswer(500), "http_status"),
        (FakeAnswer(404), "http_status"),
        (FakeAnswer(409), "http_status"),
        (FakeAnswer(302), "http_status"),  # redirects are not followed
        (Http1Error("connect to reservations.test:80: refused"), "connection"),
        (None, "timeout"),  # the handler never answers within reservation_timeout_s
    ],
)
async def test_reservation_failures_leave_the_message(run_fake, answer, reason):
    async def handler(request: FakeRequest) -> FakeAnswer:
        if answer is None:
            await trio.sleep_forever()
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, FakeAnswer)
        return answer

    sqs = FakeSqs([body()])
    worker = await run_fake(sqs, unit_settings(reservation_timeout_s=0.1), handler)
    await wait_until(lambda: sample(worker, "paysim_worker_failures_total", reason=reason) == 1)
    await wait_until(lambda: worker.in_flight == 0)
    assert sqs.delete_calls == []
    assert list(sqs.invisible) == ["rh1"]


async def test_concurrent_copies_of_one_event_call_once(run_fake):
    calls: list[FakeRequest] = []

    async def slow(request: FakeRequest) -> FakeAnswer:
        calls.append(request)
        await trio.sleep(0.05)
        return FakeAnswer(200)

    sqs = FakeSqs([body(event_id="same"), body(event_id="same")])  # one batch: handled together
    worker = await run_fake(sqs, unit_settings(pollers=1), slow)
    await wait_until(lambda: len(sqs.deleted) == 2)
    assert len(calls) == 1
    assert calls[0].method == "PATCH"
    assert calls[0].url == "http://reservations.test/internal/reservations/rsv-1"
    assert calls[0].body == b'{"status":"CONFIRMED"}'
    assert calls[0].headers == {"content-type": "application/json", "x-event-id": "same"}
    assert calls[0].idempotent is True  # the client may resend it on a fresh connection
    assert (handled(worker, "confirmed"), handled(worker, "duplicate")) == (1, 1)


async def test_reservation_id_is_one_path_segment(run_fake):
    seen: list[str] = []

    async def record(request: FakeRequest) -> FakeAnswer:
        seen.append(urlsplit(request.url).path)  # as given: the client sends it as it is
        return FakeAnswer(200)

    sqs = FakeSqs([body(reservation_id="a/b c?d#é")])
    await run_fake(sqs, unit_settings(), record)
    await wait_until(lambda: len(sqs.deleted) == 1)
    assert seen == ["/internal/reservations/a%2Fb%20c%3Fd%23%C3%A9"]


async def test_dedup_lru_is_bounded():
    sqs = FakeSqs([body(event_id=f"e{i}") for i in range(5)])
    settings = unit_settings(pollers=1, concurrency=1)
    worker = ReservationWorker(settings, sqs, FakeHttp(ok), options=ConsumerOptions(dedup_size=3))
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        await wait_until(lambda: len(sqs.deleted) == 5)
        assert worker.handled_event_ids == ["e2", "e3", "e4"]
        nursery.cancel_scope.cancel()


async def test_a_long_poll_running_at_stop_releases_what_it_gets(run_fake):
    sqs = FakeSqs([body()])
    sqs.block = threading.Event()
    worker = await run_fake(sqs, unit_settings(pollers=1), ok)
    await trio.to_thread.run_sync(sqs.receiving.wait, 5)
    with trio.fail_after(WAIT_S):
        await worker.stop(grace_s=1)  # does not wait for the abandoned long poll
    sqs.block.set()  # the long poll now returns the message, after the stop
    await wait_until(lambda: sqs.release_calls == [["rh1"]])
    assert sqs.delete_calls == []


# -- integration: moto's SQS and a real reservation endpoint ------------------------


@dataclasses.dataclass
class Call:
    raw_id: str  # as on the wire (percent-encoded)
    reservation_id: str
    body: Any
    headers: dict[bytes, bytes]


class ReservationStub(HttpApp):
    """A reservation service: records each PATCH and answers from a script."""

    def __init__(self) -> None:
        super().__init__(Readiness(), Metrics())
        self.calls: list[Call] = []
        self.statuses: list[int] = []  # answered in order, then ``default_status``
        self.default_status = 200
        self.hold: trio.Event | None = None  # if not None, answers wait until it is set
        self.delay_s = 0.0
        self.url = ""

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(PREFIX):
            return await super().handle(request)
        if request.method != "PATCH":
            return json_response(405, {"error": "method not allowed"})
        raw_id = request.path.removeprefix(PREFIX)
        self.calls.append(
            Call(raw_id, unquote(raw_id), json.loads(request.body), dict(request.headers))
        )
        if self.hold is not None:
            await self.hold.wait()
        await trio.sleep(self.delay_s)
        status = self.statuses.pop(0) if self.statuses else self.default_status
        return json_response(status, {"ok": 200 <= status < 300})


@pytest.fixture
async def reservations() -> AsyncIterator[ReservationStub]:
    stub = ReservationStub()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, "127.0.0.1", 0, stub, HttpLimits())
        stub.url = f"http://127.0.0.1:{port}"
        yield stub
        nursery.cancel_scope.cancel()


@dataclasses.dataclass
class Queues:
    sqs: Any
    url: str
    dlq_url: str

    async def send(self, *bodies: str) -> None:
        for b in bodies:
            await trio.to_thread.run_sync(
                functools.partial(self.sqs.send_message, QueueUrl=self.url, MessageBody=b)
            )

    async def counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages of the queue (or of ``url``)."""
        answer = await trio.to_thread.run_sync(
            functools.partial(
                self.sqs.get_queue_attributes,
                QueueUrl=url or self.url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        )
        a = answer["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(
            a["ApproximateNumberOfMessagesNotVisible"]
        )

    async def dlq_bodies(self) -> list[str]:
        answer = await trio.to_thread.run_sync(
            functools.partial(
                self.sqs.receive_message, QueueUrl=self.dlq_url, MaxNumberOfMessages=10
            )
        )
        return [m["Body"] for m in answer.get("Messages", [])]


@pytest.fixture
def make_queues(sqs_client: Any, aws_names: Any) -> Callable[[int], Awaitable[Queues]]:
    """``await make_queues(visibility_s)``: a queue and its DLQ (redrive after 3 receives)."""

    async def make(visibility_s: int) -> Queues:
        def create() -> Queues:
            dlq_url = sqs_client.create_queue(QueueName=aws_names.dlq)["QueueUrl"]
            dlq_arn = sqs_client.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}
            url = sqs_client.create_queue(
                QueueName=aws_names.queue,
                Attributes={
                    "VisibilityTimeout": str(visibility_s),
                    "RedrivePolicy": json.dumps(redrive),
                },
            )["QueueUrl"]
            return Queues(sqs_client, url, dlq_url)

        return await trio.to_thread.run_sync(create)

    return make


@pytest.fixture
async def start_worker(
    sqs_client: Any,
) -> AsyncIterator[Callable[..., Awaitable[ReservationWorker]]]:
    """``await start_worker(queues, reservation_url, **settings)``: a running worker."""
    async with Http1Client() as http, trio.open_nursery() as nursery:

        async def start(
            queues: Queues, reservation_url: str | None, **overrides: Any
        ) -> ReservationWorker:
            settings = WorkerSettings(
                queue_url=queues.url,
                reservation_api_url=reservation_url,
                reservation_timeout_s=2.0,
                pollers=2,
                concurrency=16,
                wait_time_s=1,
                visibility_timeout_s=0,  # the queue's own
            )
            settings = dataclasses.replace(settings, **overrides)
            worker = ReservationWorker(
                settings, sqs_client, http, options=ConsumerOptions(sqs_timeout_s=5.0)
            )
            await nursery.start(worker.run)
            return worker

        yield start
        nursery.cancel_scope.cancel()


async def test_the_worker_client_names_itself_and_reaches_the_stub(reservations):
    async with make_http_client(WorkerSettings(concurrency=4)) as http:
        url = reservations.url + PREFIX + "rsv-ua"
        answer = await http.request("PATCH", url, body=b'{"status":"CONFIRMED"}')
    assert answer.status == 200
    [call] = reservations.calls
    assert call.headers[b"user-agent"] == f"PaymentSim-Worker/{__version__}".encode()


async def test_a_refused_connection_is_a_connection_failure():
    """The real client, nothing listening: the message is left, reason "connection"."""
    with socket.socket() as bound:  # bound, not listening: connecting is refused
        bound.bind(("127.0.0.1", 0))
        settings = unit_settings(reservation_api_url=f"http://127.0.0.1:{bound.getsockname()[1]}")
        sqs = FakeSqs([body()])
        async with make_http_client(settings) as http, trio.open_nursery() as nursery:
            worker = ReservationWorker(
                settings, sqs, http, options=ConsumerOptions(sqs_timeout_s=2.0)
            )
            await nursery.start(worker.run)
            await wait_until(
                lambda: sample(worker, "paysim_worker_failures_total", reason="connection") == 1
            )
            await wait_until(lambda: worker.in_flight == 0)
            nursery.cancel_scope.cancel()
    assert sqs.delete_calls == []
    assert list(sqs.invisible) == ["rh1"]


async def drained(worker: ReservationWorker, queues: Queues) -> bool:
    return worker.in_flight == 0 and await queues.counts() == (0, 0)


async def test_completed_confirms_the_reservation_and_deletes(
    make_queues, start_worker, reservations
):
    queues = await make_queues(30)
    worker = await start_worker(queues, reservations.url)
    await queues.send(body(event_id="ev-1", reservation_id="rsv-42"))
    await wait_until(lambda: handled(worker, "confirmed") == 1)
    await wait_until(lambda: drained(worker, queues))
    [call] = reservations.calls
    assert call.reservation_id == "rsv-42"
    assert call.body == {"status": "CONFIRMED"}
    assert call.headers[b"content-type"] == b"application/json"
    assert call.headers[b"x-event-id"] == b"ev-1"
    assert sample(worker, "paysim_worker_messages_received_total") == 1
    assert await queues.counts(queues.dlq_url) == (0, 0)


async def test_failed_expired_cancelled_cancel_and_others_are_acknowledged(
    make_queues, start_worker, reservations
):
    queues = await make_queues(30)
    worker = await start_worker(queues, reservations.url)
    cancelling = ["FAILED", "EXPIRED", "CANCELLED"]
    ignored = ["PENDING", "PROCESSING", "REFUNDED"]
    await queues.send(
        *(body(f"PAYMENT_STATUS_{s}", reservation_id=f"rsv-{s}") for s in cancelling + ignored)
    )
    await wait_until(lambda: handled(worker, "cancelled") == 3 and handled(worker, "ignored") == 3)
    await wait_until(lambda: drained(worker, queues))
    assert sorted((c.reservation_id, c.body["status"]) for c in reservations.calls) == [
        ("rsv-CANCELLED", "CANCELLED"),
        ("rsv-EXPIRED", "CANCELLED"),
        ("rsv-FAILED", "CANCELLED"),
    ]


async def test_a_duplicate_event_is_deleted_without_a_second_call(
    make_queues, start_worker, reservations
):
    queues = await make_queues(30)
    worker = await start_worker(queues, reservations.url)
    await queues.send(body(event_id="ev-dup"))
    await wait_until(lambda: handled(worker, "confirmed") == 1)
    await queues.send(body(event_id="ev-dup"))  # EventBridge delivered it twice
    await wait_until(lambda: handled(worker, "duplicate") == 1)
    await wait_until(lambda: drained(worker, queues))
    assert len(reservations.calls) == 1


async def test_malformed_message_is_kept_counted_and_lands_in_the_dlq(
    make_queues, start_worker, reservations
):
    queues = await make_queues(0)  # redelivered at once: three receives in well under 1 s
    worker = await start_worker(queues, reservations.url)
    await queues.send("not json")
    await wait_until(lambda: _dlq_has(queues, 1))
    assert sample(worker, "paysim_worker_malformed_total", reason="json") == 3
    assert await queues.dlq_bodies() == ["not json"]
    assert await queues.counts() == (0, 0)
    assert reservations.calls == []
    assert all(handled(worker, o) == 0 for o in ("confirmed", "cancelled", "ignored", "duplicate"))


async def _dlq_has(queues: Queues, n: int) -> bool:
    visible, invisible = await queues.counts(queues.dlq_url)
    return visible + invisible == n


async def test_a_reservation_that_keeps_failing_sends_the_message_to_the_dlq(
    make_queues, start_worker, reservations
):
    reservations.default_status = 500
    queues = await make_queues(0)
    worker = await start_worker(queues, reservations.url)
    await queues.send(body(event_id="ev-500"))
    await wait_until(lambda: _dlq_has(queues, 1))
    await wait_until(lambda: worker.in_flight == 0)
    assert len(reservations.calls) == 3  # one per receive
    assert sample(worker, "paysim_worker_failures_total", reason="http_status") == 3
    assert handled(worker, "confirmed") == 0
    assert [json.loads(b)["id"] for b in await queues.dlq_bodies()] == ["ev-500"]


async def test_failure_is_redelivered_after_the_visibility_timeout(
    make_queues, start_worker, reservations
):
    reservations.statuses = [503]  # then 200
    queues = await make_queues(30)  # the worker asks for 1 s with each receive
    worker = await start_worker(queues, reservations.url, visibility_timeout_s=1)
    await queues.send(body())
    await wait_until(lambda: len(reservations.calls) == 1)
    first = trio.current_time()
    await wait_until(lambda: handled(worker, "confirmed") == 1)
    assert trio.current_time() - first >= 0.9  # not before the visibility timeout
    await wait_until(lambda: drained(worker, queues))
    assert len(reservations.calls) == 2
    assert sample(worker, "paysim_worker_failures_total", reason="http_status") == 1


async def test_without_reservation_url_the_decision_is_logged(make_queues, start_worker):
    queues = await make_queues(30)
    with structlog.testing.capture_logs() as logs:
        worker = await start_worker(queues, None)
        await queues.send(
            body(reservation_id="rsv-ok"), body("PAYMENT_STATUS_EXPIRED", reservation_id="rsv-x")
        )
        await wait_until(lambda: handled(worker, "confirmed") + handled(worker, "cancelled") == 2)
        await wait_until(lambda: drained(worker, queues))
    decisions = sorted(
        (e["reservation_id"], e["decision"])
        for e in logs
        if e["event"] == "reservation decision (no RESERVATION_API_URL)"
    )
    assert decisions == [("rsv-ok", "CONFIRMED"), ("rsv-x", "CANCELLED")]


async def test_graceful_stop_releases_unfinished_messages(make_queues, start_worker, reservations):
    reservations.hold = trio.Event()  # the reservation service hangs
    queues = await make_queues(30)
    worker = await start_worker(queues, reservations.url, reservation_timeout_s=30.0)
    await queues.send(body(reservation_id="a"), body(reservation_id="b"))
    await wait_until(lambda: len(reservations.calls) == 2)
    assert await queues.counts() == (0, 2)
    with trio.fail_after(WAIT_S):
        await worker.stop(grace_s=0.2)
    # Visible again at once, although the queue's visibility timeout is 30 s.
    assert await queues.counts() == (2, 0)
    assert sample(worker, "paysim_worker_messages_released_total") == 2
    assert worker.in_flight == 0
    reservations.hold.set()


async def test_graceful_stop_finishes_in_flight_messages(make_queues, start_worker, reservations):
    reservations.delay_s = 0.3
    queues = await make_queues(30)
    worker = await start_worker(queues, reservations.url)
    await queues.send(body())
    await wait_until(lambda: len(reservations.calls) == 1)
    with trio.fail_after(WAIT_S):
        await worker.stop(grace_s=5.0)
    assert handled(worker, "confirmed") == 1
    assert sample(worker, "paysim_worker_messages_released_total") == 0
    assert await queues.counts() == (0, 0)


# -- the worker process ------------------------------------------------------------


async def test_run_worker_serves_probes_consumes_and_stops(make_queues, aws_settings, nursery):
    queues = await make_queues(30)
    source = aws_settings.event_source
    settings = dataclasses.replace(
        Settings(),
        aws=aws_settings,
        worker=WorkerSettings(
            queue_url=queues.url, http_host="127.0.0.1", http_port=0, wait_time_s=1
        ),
        shutdown_grace_s=2.0,
    )
    shutdown, stopped = trio.Event(), trio.Event()

    async def run(*, task_status: trio.TaskStatus[WorkerRunning]) -> None:
        try:
            # No SQS client given: it builds its own, which finds moto through AWS_ENDPOINT_URL.
            await run_worker(
                settings, shutdown=shutdown, handle_signals=False, task_status=task_status
            )
        finally:
            stopped.set()

    running: WorkerRunning = await nursery.start(run)
    base = f"http://127.0.0.1:{running.http_port}"
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/readyz")).status_code == 200
        health = (await client.get("/health")).json()
        assert health == {"status": "healthy", "service": "payment-sim-worker"}
        await queues.send(body(source=source), body("PAYMENT_STATUS_FAILED", source=source))
        await wait_until(lambda: drained(running.worker, queues))
        scrape = (await client.get("/metrics")).text
        assert 'paysim_worker_messages_handled_total{outcome="confirmed"} 1.0' in scrape
        assert 'paysim_worker_messages_handled_total{outcome="cancelled"} 1.0' in scrape
        assert "paysim_worker_messages_in_flight 0.0" in scrape
        assert "paysim_payments_" not in scrape  # the worker exports only its own series
        assert "grpc_server_" not in scrape
        shutdown.set()
        with trio.fail_after(WAIT_S):
            await stopped.wait()
    assert running.readiness.state is ServingState.DRAINING


def test_worker_main_needs_the_queue_url(capsys):
    assert worker_main(Settings()) == 2
    err = capsys.readouterr().err
    assert "PAYMENT_WEBHOOK_QUEUE_URL" in err
    assert len(err.strip().splitlines()) == 1


async def test_worker_process_stops_cleanly_on_sigterm(make_queues, aws_env):
    """``worker_main`` in its own process: consumes, then SIGTERM, exit 0 (under 1 s)."""
    queues = await make_queues(30)
    env = {
        **os.environ,  # aws_env's credentials and AWS_ENDPOINT_URL (moto)
        "PAYMENT_WEBHOOK_QUEUE_URL": queues.url,
        "WORKER_HTTP_HOST": "127.0.0.1",
        "WORKER_HTTP_PORT": "0",
        "WORKER_WAIT_TIME_S": "1",
        "LOG_FORMAT": "json",
        "SHUTDOWN_GRACE_MS": "2000",
    }
    code = (
        "import os, sys; from paysim.config import Settings; "
        "from paysim.worker.app import worker_main; "
        "sys.exit(worker_main(Settings.from_env(os.environ)))"
    )
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        with trio.fail_after(WAIT_S):
            lines = _json_lines(proc.stdout)
            async for record in lines:
                if record["event"] == "worker consuming":
                    port = record["http_port"]
                    break
            await queues.send(body())
            await wait_until(lambda: drained_queue(queues))
            async with httpx.AsyncClient() as client:
                ready = await client.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 200
            proc.send_signal(signal.SIGTERM)
            events = [x["event"] async for x in lines]
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "signal received; draining" in events
    assert events[-1] == "worker stopped"


async def drained_queue(queues: Queues) -> bool:
    return await queues.counts() == (0, 0)


async def _json_lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[dict[str, Any]]:
    buffer = b""
    while data := await stream.receive_some():
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield json.loads(line)
