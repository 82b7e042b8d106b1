"""Idempotency keys: claim a key, give it back, or keep the answer for a retry.

Owned by ``PaymentService`` (one ``Keys`` per service); the store keeps the
records and their expiry (``PaymentStore.claim_idempotency`` and friends). A
key lives in a scope: CreatePaymentIntent's keys are the user's,
CancelPayment's belong to the payment (``cancel_scope``). A request is named
by a fingerprint of everything but its key: the same key with another
fingerprint is a conflict. A request that fails gives its key back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import trio

from paysim.domain.models import CancelResult
from paysim.errors import IdempotencyConflict
from paysim.ports import IdempotencyRecord, PaymentStore


def fingerprint(parts: tuple[object, ...]) -> str:
    """What a request asks for, as a short stable string (``CreateIntent.fingerprint``)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def cancel_scope(payment_intent_id: str) -> str:
    """The scope of CancelPayment's keys: no user id holds a control character."""
    return f"\x00cancel\x00{payment_intent_id}"


class Keys:
    def __init__(self, store: PaymentStore, ttl_s: float, now: Callable[[], float]) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._now = now

    async def claim(
        self, scope: str, key: str, fingerprint: str, payment_intent_id: str
    ) -> IdempotencyRecord | None:
        """Claim ``key`` for this request; the live record of an earlier one, if any."""
        record = IdempotencyRecord(fingerprint, payment_intent_id)
        return await self._store.claim_idempotency(scope, key, record, self._ttl_s, self._now())

    async def release(
        self, scope: str, key: str, *, shield: bool = True, unless_created: str = ""
    ) -> None:
        """Give the key back; shielded by default, as it runs while a failure unwinds.

        ``unless_created``: keep it if that payment exists (see the store's port).
        """
        with trio.CancelScope(shield=shield):
            await self._store.release_idempotency(scope, key, unless_created)

    async def once(
        self,
        scope: str,
        key: str,
        parts: tuple[object, ...],
        payment_intent_id: str,
        work: Callable[[], Awaitable[CancelResult]],
    ) -> CancelResult:
        """``work()`` at most once per key: a retry gets the first answer (CancelPayment).

        Without a key, just ``work()``. The same key with other ``parts`` is a
        conflict, and so is a retry while the first is still being carried out.
        """
        if not key:
            return await work()
        fp = fingerprint(parts)
        existing = await self.claim(scope, key, fp, payment_intent_id)
        if existing is not None:
            if existing.fingerprint != fp:
                raise IdempotencyConflict(key)
            if existing.result is None:
                raise IdempotencyConflict(key, in_progress=True)
            return existing.result
        try:
            result = await work()
        except BaseException:
            await self.release(scope, key)
            raise
        await self._store.complete_idempotency(
            scope, key, IdempotencyRecord(fp, payment_intent_id, result)
        )
        return result
