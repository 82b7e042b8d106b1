"""The fault policy: one seeded decision per call, taken at the gRPC edge.

``FaultPolicy.around`` wraps one unary handler of ``payment.v1.PaymentService``
(the edge, ``entrypoints/grpc/calls.py``, calls it only when the wiring gave
it a policy; without one nothing here runs). Per call, in this order:

1. the rule: the call's ``x-paysim-fault`` header if it has one (see
   ``TARGETED``), else the current plan's rule for the RPC;
2. latency drawn from the rule's distribution, slept *before* the work;
3. one uniform draw ``u``: ``u < error_rate`` fails the call with a code drawn
   from the weighted codes, without doing the work (``InjectedFault``);
4. the work;
5. latency *after* the work (a caller whose deadline ends meanwhile got no
   answer for work that was done: recorded as a lost answer, ``deadline``);
6. ``u < error_rate + lost_answer_rate``: the answer is lost (``InjectedFault``
   with ``committed``): the caller gets UNAVAILABLE, or its stream is reset.

Draws come from one ``random.Random(seed)``: a caller that makes the same calls
in the same order meets the same faults. Every injection is counted
(``FaultMetrics``) and every lost answer recorded in the ``Ledger``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import structlog
import trio

from paysim.faults.connections import ConnectionFaults, Connections, storm
from paysim.faults.ledger import Ledger
from paysim.faults.metrics import FaultMetrics
from paysim.faults.plan import ERROR_CODES, PAYMENT_SERVICE, FaultPlan, Latency, RpcFaults

log = structlog.get_logger("paysim.faults")

HEADER = "x-paysim-fault"
_MESSAGES = {
    "unavailable": "the payment gateway is unavailable; try again",
    "deadline_exceeded": "the payment gateway timed out",
    "resource_exhausted": "the payment gateway is overloaded; retry later",
    "internal": "the payment gateway failed",
}
LOST_MESSAGE = "connection reset before the answer was sent"
# RPCs whose work a lost answer leaves behind, and where their payment's id is.
_COMMITS = {
    "CreatePaymentIntent": "response",
    "ProcessPayment": "request",
    "CancelPayment": "request",
}


class InjectedFault(Exception):
    """Raised to the gRPC edge: end this call with ``code`` (or reset its stream)."""

    def __init__(self, code: str, message: str, *, reset: bool = False, retry_after_s: float = 0):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reset = reset
        self.retry_after_s = retry_after_s


def _targeted() -> dict[str, RpcFaults]:
    rules = {code: RpcFaults(error_rate=1.0, error_codes=((code, 1.0),)) for code in ERROR_CODES}
    rules["lost_answer"] = RpcFaults(lost_answer_rate=1.0)
    rules["lost_answer_reset"] = RpcFaults(lost_answer_rate=1.0, lost_answer_mode="reset")
    return rules


TARGETED = _targeted()  # plus "latency=MS" and "latency_after=MS"


class FaultPolicy:
    def __init__(
        self,
        plan: FaultPlan,
        seed: int | None,
        metrics: FaultMetrics,
        ledger: Ledger,
        connections: ConnectionFaults | None = None,
    ) -> None:
        self.base = plan  # what the settings asked for; a timeline returns to it
        self.plan = plan
        self.seed = seed
        self._rng = random.Random(seed)
        self._metrics = metrics
        self.ledger = ledger
        self.connections = connections if connections is not None else ConnectionFaults()

    async def storm_connections(self, server: Connections) -> None:
        """Connection-level faults against ``server`` (``connections``), until cancelled."""
        if not self.connections.empty:
            await storm(self.connections, server, random.Random(self.seed), self._metrics)

    def set_plan(self, plan: FaultPlan) -> None:
        self.plan = plan

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    async def around(
        self, service: str, rpc: str, fn: Callable[..., Any], request: Any, event: Any
    ) -> Any:
        """Run ``fn(request, request=event)`` under this call's faults (module docstring)."""
        if service != PAYMENT_SERVICE:
            return await fn(request, request=event)
        rule, kind = self._rule(rpc, event.custom_metadata)
        if rule is None:
            response = await fn(request, request=event)
            self._answered(rpc, request, response)
            return response
        rng = self._rng
        latency = rule.latency
        delay = latency.sample(rng) if latency is not None else 0.0
        if delay > 0 and latency is not None and not latency.after:
            self._metrics.injected("latency" + kind, rpc, "OK")
            await trio.sleep(delay)
        u = rng.random() if rule.error_rate or rule.lost_answer_rate else 1.0
        if u < rule.error_rate:
            code = rule.pick_code(rng)
            self._metrics.injected("error" + kind, rpc, code.upper())
            retry = rule.retry_after_s if code == "resource_exhausted" else 0.0
            raise InjectedFault(code, _MESSAGES[code], retry_after_s=retry)
        response = await fn(request, request=event)
        if delay > 0 and latency is not None and latency.after:
            self._metrics.injected("latency" + kind, rpc, "OK")
            try:
                await trio.sleep(delay)
            except trio.Cancelled:
                self._lose(rpc, request, response, "deadline")
                raise
        if u < rule.error_rate + rule.lost_answer_rate:
            reset = rule.lost_answer_mode == "reset"
            self._metrics.injected("lost_answer" + kind, rpc, "RESET" if reset else "UNAVAILABLE")
            self._lose(rpc, request, response, rule.lost_answer_mode)
            raise InjectedFault("unavailable", LOST_MESSAGE, reset=reset)
        self._answered(rpc, request, response)
        return response

    def _rule(self, rpc: str, metadata: Any) -> tuple[RpcFaults | None, str]:
        for name, value in metadata:
            if name == HEADER:
                return _parse_target(value), "_targeted"
        return self.plan.for_rpc(rpc), ""

    def _lose(self, rpc: str, request: Any, response: Any, how: str) -> None:
        where = _COMMITS.get(rpc)
        if where is None:
            return
        intent = (response if where == "response" else request).payment_intent_id
        self.ledger.lost(rpc, intent, how)
        log.info("answer lost on purpose", rpc=rpc, payment_intent_id=intent, how=how)

    def _answered(self, rpc: str, request: Any, response: Any) -> None:
        ledger = self.ledger
        if not ledger.watching:
            return
        source = response if rpc == "CreatePaymentIntent" else request
        intent = getattr(source, "payment_intent_id", "")
        if intent:
            ledger.answered(intent)


def _parse_target(value: str) -> RpcFaults:
    value = value.strip().lower()
    rule = TARGETED.get(value)
    if rule is not None:
        return rule
    name, _, ms = value.partition("=")
    if name in ("latency", "latency_after"):
        try:
            seconds = float(ms) / 1000.0
        except ValueError:
            seconds = -1.0
        if 0 <= seconds <= 120:
            return RpcFaults(latency=Latency("fixed", seconds, after=name == "latency_after"))
    raise InjectedFault(
        "invalid_argument",
        f"{HEADER}: unknown fault; one of {', '.join(TARGETED)}, latency=MS, latency_after=MS",
    )
