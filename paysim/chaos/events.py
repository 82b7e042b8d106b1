"""The event side: where the server's events are seen, and the EventBridge outage.

* ``SqsCollector`` reads the SQS queue that the bus's rule feeds (moto's server
  in the real mode, or the platform's queue with ``--target``): long-polls,
  records each envelope's detail, deletes what it read. Delivery is at least
  once; a message read twice is recorded once (by the envelope id).
* ``PutEventsSink`` (``--events sink``) stands in for EventBridge itself: it
  answers PutEvents and puts each entry on a local queue (the same
  ``EventLog``), for runs at rates moto cannot absorb (it takes about 5 ms of
  CPU per event routed to SQS, so under 200 events/s). It checks each entry's
  source, detail-type and bus, as the rule would.
* ``OutageProxy`` sits between the server and either of them (the server's
  AWS_ENDPOINT_URL_EVENTS points at it): a plain TCP relay behind a ``Gate``,
  so an outage refuses new connections and resets open ones, exactly what a
  network partition from EventBridge looks like to botocore. The server must
  buffer its events and publish them when the outage ends.

boto3 calls block: they run in worker threads (``trio.to_thread.run_sync``,
abandoned on cancellation so a long poll never holds up the end of a run).
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import trio

from paysim.chaos.gate import Gate
from paysim.domain.events import DETAIL_TYPE
from paysim.entrypoints.http import (
    HttpApp,
    HttpLimits,
    HttpRequest,
    HttpResponse,
    serve_http,
)
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics

_CHUNK = 65536
SHORT_BATCH_PAUSE_S = 0.2


@dataclass(slots=True)
class EventSeen:
    """One event as it reached the queue."""

    t: float  # wall clock, when it was read
    payment_id: str
    reservation_id: str
    status: str
    refunded: int  # the detail's refunded_amount (0 when absent)
    message_id: str
    contract_ok: bool  # source and detail-type (and bus, at the sink) as configured

    @property
    def change(self) -> tuple[str, str, int]:
        return (self.payment_id, self.status, self.refunded)


@dataclass
class EventLog:
    """Every distinct event seen, in arrival order."""

    source: str
    bus: str
    events: list[EventSeen] = field(default_factory=list)
    repeats: int = 0  # the same message read again (at-least-once)
    malformed: int = 0
    last_at: float = 0.0  # wall clock of the last read that found something
    _ids: set[str] = field(default_factory=set)

    def add(self, message_id: str, source: str, detail_type: str, detail: Any, bus: str) -> None:
        self.last_at = time.time()
        if message_id in self._ids:
            self.repeats += 1
            return
        self._ids.add(message_id)
        try:
            seen = EventSeen(
                t=self.last_at,
                payment_id=str(detail["payment_id"]),
                reservation_id=str(detail["reservation_id"]),
                status=str(detail["status"]),
                refunded=int(detail.get("refunded_amount", 0)),
                message_id=message_id,
                contract_ok=(source, detail_type, bus) == (self.source, DETAIL_TYPE, self.bus),
            )
        except (KeyError, TypeError, ValueError):
            self.malformed += 1
            return
        self.events.append(seen)


class SqsCollector:
    def __init__(self, sqs: Any, queue_url: str, log: EventLog, *, pollers: int = 2) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._log = log
        self._pollers = pollers
        self._limiter = trio.CapacityLimiter(pollers * 2)

    async def run(self) -> NoReturn:
        async with trio.open_nursery() as nursery:
            for _ in range(self._pollers):
                nursery.start_soon(self._poll)
        raise AssertionError("unreachable")  # pragma: no cover

    async def backlog(self) -> int:
        """Messages in the queue, visible or in flight (SQS's approximate counts)."""
        call = functools.partial(
            self._sqs.get_queue_attributes,
            QueueUrl=self._url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attrs = (await self._blocking(call))["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    async def _poll(self) -> NoReturn:
        # Fewer, fuller receives: after a short batch, pause so the next one is
        # fuller. moto's cost is per request (it routes each request anew) and
        # per message times the queue's length (it recounts the queue for every
        # message it returns), so a queue left to grow makes every read slower
        # until reading never catches up; reading promptly in full batches keeps
        # it short.
        receive = functools.partial(
            self._sqs.receive_message,
            QueueUrl=self._url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
        )
        while True:
            try:
                messages = (await self._blocking(receive)).get("Messages", [])
            except Exception:  # a busy emulator: try again shortly
                messages = []
            for message in messages:
                self._record(message.get("Body", ""))
            if messages:
                await self._delete(messages)
            if len(messages) < 10:
                await trio.sleep(SHORT_BATCH_PAUSE_S)

    def _record(self, body: str) -> None:
        try:
            envelope = json.loads(body)
            self._log.add(
                str(envelope["id"]),
                str(envelope.get("source", "")),
                str(envelope.get("detail-type", "")),
                envelope["detail"],
                self._log.bus,  # the rule routed it from our bus
            )
        except (ValueError, KeyError, TypeError):
            self._log.malformed += 1

    async def _delete(self, messages: list[dict[str, Any]]) -> None:
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        call = functools.partial(
            self._sqs.delete_message_batch, QueueUrl=self._url, Entries=entries
        )
        try:
            await self._blocking(call)
        except Exception:
            pass  # they come back after the visibility timeout and are recorded once

    async def _blocking(self, call: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(call, limiter=self._limiter, abandon_on_cancel=True)


class PutEventsSink:
    """An in-process stand-in for EventBridge's PutEvents, with a local queue (``EventLog``)."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._ids = itertools.count(1)
        self.app = HttpApp(Readiness(), Metrics(), service_name="paysim-chaos-events")
        self.app.add_route("/", frozenset({"POST"}), self._put_events)

    async def serve(
        self,
        host: str,
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        limits = HttpLimits(max_body_bytes=1 << 20, max_connections=1024)
        await serve_http(host, port, self.app, limits, task_status=task_status)

    async def _put_events(self, request: HttpRequest) -> HttpResponse:
        if request.header(b"x-amz-target") != b"AWSEvents.PutEvents":
            return _aws_error(400, "UnknownOperationException", "only PutEvents is served here")
        try:
            entries = json.loads(request.body)["Entries"]
            parsed = [(e, json.loads(e["Detail"])) for e in entries]
        except (ValueError, KeyError, TypeError):
            return _aws_error(400, "ValidationException", "not a PutEvents body")
        answers = []
        for entry, detail in parsed:
            event_id = f"sink-{next(self._ids)}"
            self._log.add(
                event_id,
                str(entry.get("Source", "")),
                str(entry.get("DetailType", "")),
                detail,
                str(entry.get("EventBusName", "")),
            )
            answers.append({"EventId": event_id})
        body = json.dumps({"FailedEntryCount": 0, "Entries": answers}).encode()
        return HttpResponse(200, body, content_type="application/x-amz-json-1.1")


def _aws_error(status: int, kind: str, message: str) -> HttpResponse:
    body = json.dumps({"__type": kind, "message": message}).encode()
    return HttpResponse(status, body, content_type="application/x-amz-json-1.1")


class OutageProxy:
    """A TCP relay to one of ``upstream_ports`` on ``host`` that can be cut (``gate.outage``).

    With several upstreams, each new connection goes to the next one (round
    robin): one endpoint in front of several moto servers, each a whole
    EventBridge -> rule -> SQS path of its own (see ``run``).
    """

    def __init__(self, host: str, upstream_ports: list[int]) -> None:
        self._host = host
        self._ports = itertools.cycle(upstream_ports)
        self.gate = Gate(self._relay)

    async def serve(
        self,
        host: str,
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        await self.gate.serve(host, port, task_status=task_status)

    async def _relay(self, client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream(self._host, next(self._ports))
        async with upstream, trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
            nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)


async def _pump(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
    """Copy ``src`` to ``dst`` until either side ends; then end the other direction too."""
    try:
        while data := await src.receive_some(_CHUNK):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        done.cancel()
