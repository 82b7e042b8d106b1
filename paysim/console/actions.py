"""The console's actions (``POST /console/api/...``), each through a service use case.

Nothing here touches the store: approve and decline are ProcessPayment with
a test card's outcome (``forced_outcomes``), expire and resend are
SimulateWebhook, cancel and refund are CancelPayment, create is
CreatePaymentIntent after the same validation and sendability check as the
gRPC edge. Recover resends (SimulateWebhook, a fresh event id with the
payment's current state) every payment whose last delivery failed, or was
skipped while its endpoint was disabled, since a time. A domain error's
message (written for clients) is the answer; anything else is a generic 500.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from paysim.console.api import Console
from paysim.delivery.target import SendableCheck
from paysim.domain import validation
from paysim.domain.forced_outcomes import OUTCOMES
from paysim.domain.models import (
    Metadata,
    PaymentMethod,
    PaymentStatus,
    Scenario,
)
from paysim.entrypoints.http import HttpRequest, HttpResponse, json_response
from paysim.errors import InvalidArgument, NotFound, PaysimError
from paysim.service import PaymentService

_STATUS_OF_ERROR = {NotFound: 404, InvalidArgument: 400}


class BadRequest(Exception):
    pass


def _int(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{name} must be an integer")
    return value


def _object(raw: bytes) -> dict[str, Any]:
    body = json.loads(raw or b"{}")
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


class Actions:
    def __init__(self, console: Console, service: PaymentService, sendable: SendableCheck) -> None:
        self._c, self._service, self._sendable = console, service, sendable

    def handler(
        self, act: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
    ) -> Callable[[HttpRequest], Awaitable[HttpResponse]]:
        async def handle(request: HttpRequest) -> HttpResponse:
            try:
                return json_response(200, await act(_object(request.body)))
            except (ValueError, BadRequest) as exc:
                message = str(exc) if isinstance(exc, BadRequest) else "the body must be JSON"
                return json_response(400, {"error": message})
            except PaysimError as exc:
                status = next((s for t, s in _STATUS_OF_ERROR.items() if isinstance(exc, t)), 409)
                return json_response(status, {"error": exc.message})

        return handle

    # -- on one payment ------------------------------------------------------------------
    async def act(self, body: dict[str, Any]) -> dict[str, Any]:
        pid, action = str(body.get("payment_id", "")), str(body.get("action", ""))
        recorder = self._c.recorder
        recorder.expect(pid, f"console: {action}")
        try:
            await self._act(pid, action, body)
        finally:
            recorder.forget_expected(pid)
        return {"ok": True, "payment_id": pid, "action": action}

    async def _act(self, pid: str, action: str, body: dict[str, Any]) -> None:
        s = self._service
        if action in ("approve", "decline"):
            code = "approve" if action == "approve" else str(body.get("code") or "decline")
            if code not in OUTCOMES or code == "pg_timeout":
                raise BadRequest("code must be a decline code from the test-card table")
            payment = await s.get_payment(pid)
            if payment.status is not PaymentStatus.PENDING:
                raise BadRequest(f"payment is {payment.status.name}: only PENDING ones can be")
            await s.process_payment(pid, forced=code)
        elif action == "expire":
            await s.simulate_webhook(pid, PaymentStatus.EXPIRED, 0.0, True)
        elif action == "resend":
            await s.simulate_webhook(pid, PaymentStatus.UNSPECIFIED, 0.0, True)
        elif action in ("cancel", "refund"):
            amount = body.get("amount")
            partial = action == "refund" and amount not in (None, "")
            payment = await s.get_payment(pid)
            cmd = validation.validate_cancel(
                payment_intent_id=pid,
                reason=str(body.get("reason") or f"console {action}"),
                refund_present=partial,
                refund_amount=_int(body, "amount") if partial else 0,
                refund_currency=payment.amount.currency,
                idempotency_key="",
            )
            await s.cancel_payment(cmd)
        else:
            raise BadRequest("action must be approve, decline, expire, cancel, refund or resend")

    # -- create a test payment ----------------------------------------------------------
    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        scenario = str(body.get("scenario") or "approve").upper()
        if scenario not in Scenario.__members__ or scenario == "UNSPECIFIED":
            raise BadRequest("scenario must be one of approve, fail, delay, random, timeout")
        tags = {"delay_ms": str(_int(body, "delay_ms"))} if body.get("delay_ms") else {}
        url = body.get("webhook_url")
        request = validation.CreateRequest(
            reservation_id=str(body.get("reservation_id") or f"res_console_{int(time.time())}"),
            user_id=str(body.get("user_id") or "console"),
            amount=_int(body, "amount", 10_000),
            currency=str(body.get("currency") or "KRW"),
            amount_present=True,
            method=PaymentMethod.CREDIT_CARD,
            scenario=Scenario[scenario],
            webhook_url=self._c.settings.default_webhook_url if url is None else str(url),
            idempotency_key="",
            metadata=Metadata(source="console", tags=tags),
        )
        cmd = validation.validate_create(request, max_delay_s=self._c.max_delay_s)
        if cmd.webhook_url:
            self._sendable(cmd.webhook_url)
        created = await self._service.create_intent(cmd)
        return {"ok": True, "payment_id": created.payment.payment_intent_id}

    # -- endpoints -------------------------------------------------------------------------
    async def endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        host, enabled = str(body.get("host", "")), body.get("enabled")
        if self._c.gate is None or not host or not isinstance(enabled, bool):
            raise BadRequest("give host and enabled (true or false)")
        (self._c.gate.disabled.discard if enabled else self._c.gate.disabled.add)(host)
        return {"ok": True, "host": host, "enabled": enabled}

    async def recover(self, body: dict[str, Any]) -> dict[str, Any]:
        since = body.get("since", 0)
        if not isinstance(since, (int, float)) or isinstance(since, bool):
            raise BadRequest("since must be a time in seconds since the epoch")
        ids: dict[str, None] = {}
        journal = self._c.journal
        for pid, attempts in journal.recent() if journal is not None else []:
            last = attempts[-1]
            if last.at >= since and last.outcome in ("gave_up", "gone", "blocked"):
                ids[pid] = None
        for pid, at, _ in self._c.recorder.skipped:
            if at >= since:
                ids[pid] = None
        resent = 0
        for pid in ids:
            try:
                self._c.recorder.expect(pid, "console: recover")
                await self._service.simulate_webhook(pid, PaymentStatus.UNSPECIFIED, 0.0, True)
                resent += 1
            except PaysimError:
                self._c.recorder.forget_expected(pid)  # gone by retention since
        kept = [s for s in self._c.recorder.skipped if s[1] < since]
        self._c.recorder.skipped.clear()
        self._c.recorder.skipped.extend(kept)
        return {"ok": True, "resent": resent}
