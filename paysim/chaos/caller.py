"""Two payment clients, as a ticketing team writes them, for ``paysim chaos --caller``.

* ``naive``: no idempotency key; when CreatePaymentIntent or ProcessPayment
  fails with UNAVAILABLE or INTERNAL (what a lost answer looks like: reset
  streams are INTERNAL to grpcio) it starts the payment over with a fresh
  request. A capture whose answer was lost is then followed by a second one.
* ``correct``: one idempotency key per reservation, the same on every retry of
  CreatePaymentIntent, and ProcessPayment retried on the same intent. A lost
  answer is recovered; nothing is charged twice.

Both retry any retryable code (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED) after a short pause, for at most ``give_up_s`` per
reservation. What each caused is known afterwards from the payments
themselves (``truth``): every intent a caller created is read back with
GetPaymentStatus once nothing is PROCESSING any more, and the reservations
with more than one COMPLETED payment are the double charges it caused. The
driver also counts, as it goes, the captures whose answer it never got and
that it followed with another payment (``expected_doubles``,
``expected_extra``): it looks up the intent after each failed ProcessPayment.

These are blocking grpcio calls: ``CallerRun`` runs them in worker threads.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from paysim._proto.proto.common.v1 import types_pb2
from paysim._proto.proto.payment.v1 import payment_pb2 as pb

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
CARD = pb.PaymentDetails(
    method=pb.PAYMENT_METHOD_CREDIT_CARD,
    credit_card=pb.CreditCardDetails(
        card_number="4242424242424242", expiry_month="12", expiry_year="2099", cvv="123"
    ),
)
CALL_TIMEOUT_S = 30.0
PAUSE_S = 0.02
OPEN = (pb.PAYMENT_STATUS_PENDING, pb.PAYMENT_STATUS_PROCESSING)


@dataclass
class CallerStats:
    """What one caller did and met."""

    kind: str
    reservations: int = 0
    paid: int = 0  # reservations whose payment the caller saw succeed
    gave_up: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    # What the driver knows it caused: a capture whose answer was lost, then another.
    expected_doubles: int = 0
    expected_extra: int = 0
    intents: dict[str, list[str]] = field(default_factory=dict)  # reservation -> intent ids


def _request(reservation_id: str, key: str) -> Any:
    return pb.CreatePaymentIntentRequest(
        reservation_id=reservation_id,
        user_id="chaos-caller",
        amount=types_pb2.Money(amount=50_000, currency="KRW"),
        scenario=pb.PAYMENT_SCENARIO_APPROVE,
        idempotency_key=key,
    )


class Caller:
    """One caller's loop for one reservation at a time (thread-safe per reservation)."""

    def __init__(self, stub: Any, stats: CallerStats, give_up_s: float = 60.0) -> None:
        self._stub = stub
        self.stats = stats
        self._give_up_s = give_up_s

    def pay(self, reservation_id: str) -> None:
        s = self.stats
        s.reservations += 1
        s.intents[reservation_id] = []
        pay = self._naive if s.kind == "naive" else self._correct
        ok = pay(reservation_id)
        s.paid += ok
        s.gave_up += not ok

    # -- the two callers -------------------------------------------------------------
    def _naive(self, reservation_id: str) -> bool:
        deadline = time.monotonic() + self._give_up_s
        captured = 0  # captures made for this reservation, answered or not
        try:
            while time.monotonic() < deadline:
                intent = self._call(self._stub.CreatePaymentIntent, _request(reservation_id, ""))
                if intent is None:
                    continue
                self.stats.intents[reservation_id].append(intent.payment_intent_id)
                if self._call(self._stub.ProcessPayment, _process(intent.payment_intent_id)):
                    captured += 1
                    return True
                if self._captured(intent.payment_intent_id):
                    captured += 1  # the answer was lost: the next attempt charges again
            return False
        finally:
            self.stats.expected_extra += max(0, captured - 1)
            self.stats.expected_doubles += captured > 1

    def _correct(self, reservation_id: str) -> bool:
        deadline = time.monotonic() + self._give_up_s
        intent = None
        while intent is None and time.monotonic() < deadline:
            intent = self._call(
                self._stub.CreatePaymentIntent, _request(reservation_id, reservation_id)
            )
        if intent is None:
            return False
        self.stats.intents[reservation_id].append(intent.payment_intent_id)
        while time.monotonic() < deadline:
            if self._call(self._stub.ProcessPayment, _process(intent.payment_intent_id)):
                return True
        return False

    # -- helpers -----------------------------------------------------------------------
    def _call(self, rpc: Any, request: Any) -> Any:
        """The answer, or None after a retryable failure (counted, then a short pause)."""
        try:
            return rpc(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            code = exc.code()
            self.stats.codes[code.name] += 1
            if code not in RETRYABLE:
                raise
            time.sleep(PAUSE_S)
            return None

    def _captured(self, intent_id: str) -> bool:
        """Whether the capture whose answer failed went through (the driver's own look)."""
        return status_of(self._stub, intent_id) != pb.PAYMENT_STATUS_PENDING


def _process(intent_id: str) -> Any:
    return pb.ProcessPaymentRequest(payment_intent_id=intent_id, payment_details=CARD)


def status_of(stub: Any, intent_id: str, give_up_s: float = 60.0) -> int:
    """GetPaymentStatus's status, retried through any fault (a read is always safe)."""
    deadline = time.monotonic() + give_up_s
    while True:
        try:
            answer = stub.GetPaymentStatus(
                pb.GetPaymentStatusRequest(payment_intent_id=intent_id), timeout=CALL_TIMEOUT_S
            )
            return int(answer.payment.status)
        except grpc.RpcError as exc:
            if exc.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            time.sleep(PAUSE_S)


def statuses_of(stub: Any, intent_ids: list[str], in_flight: int = 64) -> dict[str, int]:
    """Every intent's status, ``in_flight`` GetPaymentStatus calls at a time (grpcio
    futures); a call that fails retryably is asked again alone (``status_of``).

    One blocking call at a time spent most of a 10,000-payment turn waiting on
    loopback round trips, with both processes under a third of a core.
    """
    out: dict[str, int] = {}
    for start in range(0, len(intent_ids), in_flight):
        chunk = intent_ids[start : start + in_flight]
        futures = [
            stub.GetPaymentStatus.future(
                pb.GetPaymentStatusRequest(payment_intent_id=i), timeout=CALL_TIMEOUT_S
            )
            for i in chunk
        ]
        for intent_id, future in zip(chunk, futures, strict=True):
            try:
                out[intent_id] = int(future.result().payment.status)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
                out[intent_id] = status_of(stub, intent_id)
    return out


def truth(stub: Any, stats: CallerStats, settle_s: float = 60.0) -> tuple[int, int]:
    """(reservations charged more than once, extra captures) from the payments themselves.

    Waits for every PROCESSING payment to finish (at most ``settle_s``).
    """
    statuses = statuses_of(stub, [i for ids in stats.intents.values() for i in ids])
    doubles = extra = 0
    deadline = time.monotonic() + settle_s
    for intent_ids in stats.intents.values():
        completed = 0
        for intent_id in intent_ids:
            status = statuses[intent_id]
            while status == pb.PAYMENT_STATUS_PROCESSING and time.monotonic() < deadline:
                time.sleep(PAUSE_S)
                status = status_of(stub, intent_id)
            completed += status == pb.PAYMENT_STATUS_COMPLETED
        if completed > 1:
            doubles += 1
            extra += completed - 1
    return doubles, extra
