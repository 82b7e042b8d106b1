"""The console's two taps: a store that reports new payments, a gate on webhooks.

``ObservedStore`` wraps the store the service uses: every call goes through
unchanged; a successful ``insert`` (and the idempotency claim before it) is
told to the recorder. ``WebhookGate`` wraps the webhook channel: deliveries to
an endpoint (host) the console disabled are not queued; they are noted on the
payment's timeline and in ``Recorder.skipped`` so that *recover* sends them
once the endpoint is enabled again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from paysim.console.recorder import Recorder
from paysim.console.views import endpoint_of
from paysim.domain.models import Payment, StatusChange
from paysim.ports import IdempotencyRecord, Notifier, PaymentStore


class ObservedStore:
    """A ``PaymentStore`` that tells ``recorder`` what it inserts."""

    def __init__(self, inner: PaymentStore, recorder: Recorder) -> None:
        self._inner, self._recorder = inner, recorder

    async def insert(self, payment: Payment) -> None:
        await self._inner.insert(payment)
        self._recorder.created(payment)

    async def get(self, payment_intent_id: str) -> Payment | None:
        return await self._inner.get(payment_intent_id)

    async def get_for_update(self, payment_intent_id: str) -> Payment | None:
        return await self._inner.get_for_update(payment_intent_id)

    async def compare_and_set(
        self, expected_version: int, new: Payment, change: StatusChange | None = None
    ) -> bool:
        return await self._inner.compare_and_set(expected_version, new, change)

    async def claim_idempotency(
        self, user_id: str, key: str, record: IdempotencyRecord, ttl_s: float, now: float
    ) -> IdempotencyRecord | None:
        existing = await self._inner.claim_idempotency(user_id, key, record, ttl_s, now)
        if existing is None:
            self._recorder.claimed(record.payment_intent_id, key)
        return existing

    async def release_idempotency(self, user_id: str, key: str, unless_created: str = "") -> None:
        await self._inner.release_idempotency(user_id, key, unless_created)

    async def complete_idempotency(self, user_id: str, key: str, record: IdempotencyRecord) -> None:
        await self._inner.complete_idempotency(user_id, key, record)

    async def user_payments(self, user_id: str) -> Sequence[Payment]:
        return await self._inner.user_payments(user_id)

    async def sweep(self, now: float) -> list[str]:
        return await self._inner.sweep(now)


class WebhookGate:
    """The webhook channel, minus the endpoints the console disabled."""

    def __init__(self, inner: Notifier, recorder: Recorder, on_done: Callable[[str], None]) -> None:
        self._inner, self._recorder, self._on_done = inner, recorder, on_done
        self.disabled: set[str] = set()

    def announces(self, change: StatusChange) -> bool:
        return self._inner.announces(change)  # kept: a later recover may still send it

    async def notify(self, change: StatusChange) -> None:
        url = change.payment.webhook_url
        host = endpoint_of(url) if url else ""
        if host not in self.disabled:
            await self._inner.notify(change)
            return
        pid = change.payment.payment_intent_id
        self._recorder.skipped.append((pid, change.at, host))
        self._recorder.note(
            pid,
            {
                "at": change.at,
                "kind": "webhook",
                "outcome": "skipped",
                "error": f"endpoint {host} is disabled",
                "event_id": change.event_id,
            },
        )
        self._on_done(change.event_id)
