"""The in-memory store: one process owns its payments. The default, and the test twin."""

from __future__ import annotations

from collections import OrderedDict

from paysim.domain.models import Payment
from paysim.ports import IdempotencyRecord


class MemoryStore:
    """Dict-backed ``PaymentStore``. Never awaits, so every method is atomic under trio."""

    def __init__(self) -> None:
        self._payments: dict[str, Payment] = {}
        # (user_id, key) -> (expires_at, record), oldest first: expiry sweeps from the front.
        self._keys: OrderedDict[tuple[str, str], tuple[float, IdempotencyRecord]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._payments)

    async def insert(self, payment: Payment) -> None:
        self._payments[payment.payment_intent_id] = payment

    async def get(self, payment_intent_id: str) -> Payment | None:
        return self._payments.get(payment_intent_id)

    async def compare_and_set(self, expected_version: int, new: Payment) -> bool:
        current = self._payments.get(new.payment_intent_id)
        if current is None or current.version != expected_version:
            return False
        self._payments[new.payment_intent_id] = new
        return True

    async def claim_idempotency(
        self, user_id: str, key: str, record: IdempotencyRecord, ttl_s: float, now: float
    ) -> IdempotencyRecord | None:
        self._sweep(now)
        existing = self._keys.get((user_id, key))
        if existing is not None:
            return existing[1]
        self._keys[(user_id, key)] = (now + ttl_s, record)
        return None

    async def release_idempotency(self, user_id: str, key: str) -> None:
        self._keys.pop((user_id, key), None)

    def _sweep(self, now: float) -> None:
        keys = self._keys
        while keys:
            first = next(iter(keys))
            if keys[first][0] > now:
                return
            del keys[first]
