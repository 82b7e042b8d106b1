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
   with ``committed``): the caller gets UNAVAILABLE, or its stream is reset;
7. ``u < error_rate + lost_answer_rate + slow_drip_rate``: the answer is
   returned wrapped in a ``SlowDrip``: the edge sends its bytes a chunk at a
   time with pauses between. A drip that does not reach its end (the caller's
   deadline, a reset stream, a closed connection) is recorded as a lost answer
   (``slow_drip``): the work is done and the caller did not hear it whole.

Webhook lag (``webhook_lag``) is the hook the webhook dispatcher calls for
each delivery that becomes due: the plan's ``webhooks.lag`` while one is in
force, else 0. Its draws come from a second ``Random(seed)``, so that webhook
traffic does not shift the API calls' faults.

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
from paysim.faults.plan import (
    ERROR_CODES,
    MAX_DRIP_CHUNK,
    MAX_LATENCY_S,
    PAYMENT_SERVICE,
    FaultPlan,
    Latency,
    RpcFaults,
)

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


TARGETED = _targeted()  # plus "latency=MS", "latency_after=MS", "slow_drip[=BYTES:MS]"
_DRIP = RpcFaults(slow_drip_rate=1.0)


class SlowDrip:
    """An answer to send ``chunk_bytes`` at a time, ``interval_s`` apart (the edge does).

    The edge calls ``delivered`` once the last byte is out, else ``cut_short``.
    """

    __slots__ = ("_policy", "_request", "_rpc", "chunk_bytes", "interval_s", "response")

    def __init__(self, policy: FaultPolicy, rpc: str, request: Any, response: Any, rule: RpcFaults):
        self.response = response
        self.chunk_bytes = rule.slow_drip_chunk_bytes
        self.interval_s = rule.slow_drip_interval_s
        self._policy = policy
        self._rpc = rpc
        self._request = request

    def delivered(self) -> None:
        self._policy._answered(self._rpc, self._request, self.response)

    def cut_short(self) -> None:
        self._policy._lose(self._rpc, self._request, self.response, "slow_drip")


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
        self._lag_rng = random.Random(seed)
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
        self._lag_rng = random.Random(seed)

    def webhook_lag(self) -> float:
        """Seconds a webhook delivery that becomes due now waits before its first attempt."""
        webhooks = self.plan.webhooks
        if webhooks is None:
            return 0.0
        lag = webhooks.lag.sample(self._lag_rng)
        if lag > 0:
            self._metrics.injected("webhook_lag", "webhook", "OK")
        return lag

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
        lost = rule.error_rate + rule.lost_answer_rate
        u = rng.random() if lost or rule.slow_drip_rate else 1.0
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
        if u < lost:
            reset = rule.lost_answer_mode == "reset"
            self._metrics.injected("lost_answer" + kind, rpc, "RESET" if reset else "UNAVAILABLE")
            self._lose(rpc, request, response, rule.lost_answer_mode)
            raise InjectedFault("unavailable", LOST_MESSAGE, reset=reset)
        if u < lost + rule.slow_drip_rate:
            self._metrics.injected("slow_drip" + kind, rpc, "OK")
            return SlowDrip(self, rpc, request, response, rule)
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
    if name == "slow_drip":
        drip = _parse_drip(ms)
        if drip is not None:
            return drip
    raise InjectedFault(
        "invalid_argument",
        f"{HEADER}: unknown fault; one of {', '.join(TARGETED)}, latency=MS, latency_after=MS,"
        " slow_drip or slow_drip=BYTES:MS (BYTES 1 to 16384 per chunk, MS 0 to 120000 apart)",
    )


def _parse_drip(value: str) -> RpcFaults | None:
    if not value:
        return _DRIP
    size, _, ms = value.partition(":")
    try:
        chunk, seconds = int(size), float(ms) / 1000.0
    except ValueError:
        return None
    if not (1 <= chunk <= MAX_DRIP_CHUNK and 0 <= seconds <= MAX_LATENCY_S):
        return None
    return RpcFaults(slow_drip_rate=1.0, slow_drip_chunk_bytes=chunk, slow_drip_interval_s=seconds)
