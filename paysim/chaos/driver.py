"""The load: payments created open loop at a fixed rate, each running its scenario's journey.

``plan(options)`` decides everything up front from the seed: the scenario of
payment ``i`` and its reservation id (``rsv_chaos_<seed>_<i>``, so the
receiver's seeded faults hit the same changes in a rerun). ``Driver.run``
sends create ``i`` at ``start + i / rate`` whatever the answers do (open loop:
a slow server shows up as lateness, not as a lower offered rate; creates
reach the server one at a time, in plan order, see ``_create``), then makes
the journey's follow-up calls (process, cancel, refunds) in that payment's own
task, and then, once the payment should have settled (``Timing``), asks
GetPaymentStatus for it: the **snapshot** is taken during the load, so that
the server can be sent SIGTERM the moment the load ends, while the payments
created last are still pending. ``run(tail_s=…)`` stops taking the snapshot
that long after the last create; what was not asked for by then (or not
settled yet) is left for the drain and checked through its webhooks and
events. ``snapshot_missing`` asks again for those (without SIGTERM).

gRPC goes through grpcio's blocking stubs in worker threads
(``trio.to_thread.run_sync`` behind one ``CapacityLimiter``, the number of
calls in flight); grpcio is the client the platform itself uses. Every call
has a deadline. The stubs are owned by the caller.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import grpc
import trio

from paysim._proto.proto.common.v1 import types_pb2
from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim.chaos.options import Options
from paysim.chaos.scenarios import AMOUNT, PARTIAL_REFUND, SCENARIOS, TERMINAL

CALL_TIMEOUT_S = 10.0
CURRENCY = "KRW"
USERS = 100
SETTLE_MARGIN_S = 0.1
ASK_AGAIN_S = 0.5
ASK_TRIES = 5


@dataclass(frozen=True)
class Timing:
    """When a payment of each scenario settles, after its journey's last call (seconds)."""

    settle_s: dict[str, float]

    @classmethod
    def of_server(
        cls, *, default_delay_ms: int, delay_scenario_ms: int, intent_ttl_ms: int, scale: float
    ) -> Timing:
        """From the server's DEFAULT_DELAY_MS, DELAY_SCENARIO_MS, INTENT_TTL_MS and time scale."""
        by_scenario = {"delay": delay_scenario_ms, "timeout": intent_ttl_ms}
        settle = {}
        for name, scenario in SCENARIOS.items():
            ms = 0 if scenario.steps else by_scenario.get(name, default_delay_ms)
            settle[name] = ms * scale / 1000.0 + SETTLE_MARGIN_S
        return cls(settle)


@dataclass(slots=True)
class Intent:
    """One planned payment and what happened to it on the driver's side."""

    index: int
    scenario: str
    reservation_id: str
    user_id: str
    payment_id: str = ""  # set once CreatePaymentIntent answered: the intent was accepted
    error: str = ""  # the create failed (a gRPC code): not accepted
    step_error: str = ""  # a follow-up call failed unexpectedly
    cancelled: bool = False  # CancelPayment cancelled its pending timer
    race_lost: bool = False  # the timer fired before the cancel (FAILED_PRECONDITION)
    created_at: float = math.nan  # wall clock, when the create answered

    @property
    def accepted(self) -> bool:
        return bool(self.payment_id)


def plan(options: Options) -> list[Intent]:
    """Every payment of the run, decided from the seed alone."""
    rng = random.Random(options.seed)
    names = list(options.mix)
    weights = [options.mix[n] for n in names]
    chosen = rng.choices(names, weights, k=options.count)
    return [
        Intent(i, name, f"rsv_chaos_{options.seed}_{i}", f"user_chaos_{i % USERS}")
        for i, name in enumerate(chosen)
    ]


class Driver:
    def __init__(
        self, stubs: list[Any], options: Options, webhook_url: str, timing: Timing
    ) -> None:
        self._stubs = stubs
        self._options = options
        self._url = webhook_url
        self._timing = timing
        self._limiter = trio.CapacityLimiter(options.concurrency)
        self._stop_asking = trio.Event()
        self.intents = plan(options)
        self._created = [trio.Event() for _ in self.intents]
        self.snapshot: dict[str, str] = {}  # payment id -> GetPaymentStatus's status
        self.sent = 0
        self.done = 0
        self.errors: Counter[str] = Counter()
        self.max_lateness_s = 0.0
        self.started_at = math.nan  # wall clock of the first create
        self.finished_at = math.nan

    @property
    def accepted(self) -> int:
        return sum(1 for i in self.intents if i.accepted)

    async def run(self, *, tail_s: float | None = None) -> None:
        """Send every create on schedule; return when every journey has finished.

        ``tail_s``: stop asking for statuses this long after the last create
        (None: ask until every payment has been asked for). Creates and their
        follow-up calls are never cut short.
        """
        rate = self._options.rate
        start = trio.current_time() + 0.05
        self.started_at = time.time() + 0.05
        async with trio.open_nursery() as journeys:
            for intent in self.intents:
                due = start + intent.index / rate
                await trio.sleep_until(due)
                self.max_lateness_s = max(self.max_lateness_s, trio.current_time() - due)
                self.sent += 1
                journeys.start_soon(self._journey, intent)
            self.finished_at = time.time()
            if tail_s is not None:
                await trio.sleep(tail_s)
                self._stop_asking.set()

    async def _journey(self, intent: Intent) -> None:
        try:
            await self._create(intent)
            if intent.accepted:
                for step in SCENARIOS[intent.scenario].steps:
                    if not await self._step(intent, step):
                        break
        finally:
            self.done += 1
        if intent.accepted:
            await self._ask_when_settled(intent)

    async def _ask_when_settled(self, intent: Intent) -> None:
        wait = self._timing.settle_s[intent.scenario]
        for _ in range(ASK_TRIES):
            with trio.move_on_after(wait):
                await self._stop_asking.wait()
            if self._stop_asking.is_set():
                return
            status = self.snapshot[intent.payment_id] = await self._status(intent)
            if status in TERMINAL or status == "NOT_FOUND":
                return
            wait = ASK_AGAIN_S

    async def _status(self, intent: Intent) -> str:
        """GetPaymentStatus's status name; ``NOT_FOUND``, or ``ERROR <code>`` for other failures."""
        request = pb.GetPaymentStatusRequest(payment_intent_id=intent.payment_id)
        try:
            response = await self._call("GetPaymentStatus", request, intent.index)
        except grpc.RpcError as exc:
            code = exc.code()
            return "NOT_FOUND" if code is grpc.StatusCode.NOT_FOUND else f"ERROR {code.name}"
        return str(pb.PaymentStatus.Name(response.payment.status))

    async def _create(self, intent: Intent) -> None:
        scenario = SCENARIOS[intent.scenario]
        tags = {} if scenario.delay_ms is None else {"delay_ms": str(scenario.delay_ms)}
        request = pb.CreatePaymentIntentRequest(
            reservation_id=intent.reservation_id,
            user_id=intent.user_id,
            amount=types_pb2.Money(amount=AMOUNT, currency=CURRENCY),
            scenario=scenario.proto,  # type: ignore[arg-type]
            webhook_url=self._url,
            metadata=pb.PaymentMetadata(source="paysim-chaos", tags=tags),
        )
        # One create at a time, in plan order: a server seeded with the same
        # SIMULATION_SEED then draws the same outcomes (RANDOM's, the declines)
        # for the same payments in every run. It caps creates at a few hundred
        # a second, far above what moto can follow.
        if intent.index:
            await self._created[intent.index - 1].wait()
        try:
            response = await self._call("CreatePaymentIntent", request, intent.index)
        except grpc.RpcError as exc:
            intent.error = exc.code().name
            self.errors[f"create {intent.error}"] += 1
            return
        finally:
            self._created[intent.index].set()
        intent.payment_id = response.payment_intent_id
        intent.created_at = time.time()

    async def _step(self, intent: Intent, step: str) -> bool:
        """One follow-up call; False when the journey cannot go on."""
        pid = intent.payment_id
        if step == "process":
            request: Any = pb.ProcessPaymentRequest(payment_intent_id=pid)
            method = "ProcessPayment"
        else:
            request = _cancel_request(pid, step)
            method = "CancelPayment"
        try:
            await self._call(method, request, intent.index)
        except grpc.RpcError as exc:
            code = exc.code()
            if step == "cancel" and code is grpc.StatusCode.FAILED_PRECONDITION:
                intent.race_lost = True
            else:
                intent.step_error = f"{method} {code.name}"
                self.errors[intent.step_error] += 1
            return False
        if step == "cancel":
            intent.cancelled = True
        return True

    async def _call(self, method: str, request: Any, index: int) -> Any:
        stub = self._stubs[index % len(self._stubs)]
        call = functools.partial(getattr(stub, method), request, timeout=CALL_TIMEOUT_S)
        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def snapshot_missing(self) -> None:
        """Ask again for every accepted payment not seen settled yet."""

        async def one(intent: Intent) -> None:
            self.snapshot[intent.payment_id] = await self._status(intent)

        async with trio.open_nursery() as nursery:
            for intent in self.intents:
                if intent.accepted and self.snapshot.get(intent.payment_id) not in TERMINAL:
                    nursery.start_soon(one, intent)


def _cancel_request(payment_id: str, step: str) -> Any:
    if step == "partial_refund":
        return pb.CancelPaymentRequest(
            payment_intent_id=payment_id,
            reason="chaos: partial refund",
            refund_amount=types_pb2.Money(amount=PARTIAL_REFUND, currency=CURRENCY),
        )
    reason = {"cancel": "chaos: cancelled while pending", "refund": "chaos: refund the rest"}
    return pb.CancelPaymentRequest(payment_intent_id=payment_id, reason=reason[step])
