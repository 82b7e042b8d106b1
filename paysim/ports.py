"""The ports the service talks through. Each has an in-memory twin for tests.

Store methods are ``async`` so a networked store (Redis) fits behind the same
port; the in-memory store never blocks. ``SharedStore`` is what a store that
several replicas share adds (Redis): the composition root, ``paysim.replica``
and ``paysim.outbox`` use it through this port, never through the adapter.
``Notifier`` is a delivery channel, and the outbox that fans out to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

import trio
from trio_util import AsyncBool

from paysim.domain.models import CancelResult, Payment, StatusChange


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    fingerprint: str
    payment_intent_id: str
    # CancelPayment's answer, kept so a retry with the key returns it; None
    # while the first request is still being carried out.
    result: CancelResult | None = None


class PaymentStore(Protocol):
    async def insert(self, payment: Payment) -> None:
        """Add a new payment (its id is fresh)."""

    async def get(self, payment_intent_id: str) -> Payment | None: ...

    async def get_for_update(self, payment_intent_id: str) -> Payment | None:
        """The payment, possibly a version behind: only for a compare-and-set that follows."""

    async def compare_and_set(
        self, expected_version: int, new: Payment, change: StatusChange | None = None
    ) -> bool:
        """Replace the payment if its stored version is still ``expected_version``.

        ``change`` is what will be announced for it, if anything will (the
        outbox decides); a shared store keeps it with the write until
        ``outbox_done`` (see ``SharedStore`` and ``paysim.outbox``).
        """

    async def claim_idempotency(
        self, user_id: str, key: str, record: IdempotencyRecord, ttl_s: float, now: float
    ) -> IdempotencyRecord | None:
        """Store ``record`` under (user, key) unless a live one exists; return that one."""

    async def release_idempotency(self, user_id: str, key: str, unless_created: str = "") -> None:
        """Forget a claim whose payment could not be created.

        ``unless_created``: the claim's payment id; if that payment exists after
        all (an insert whose answer was lost may have run), the claim stays, so
        a retry with the key gets that payment instead of creating another.
        """

    async def complete_idempotency(self, user_id: str, key: str, record: IdempotencyRecord) -> None:
        """Replace a live claim's record (with the answer), keeping its expiry."""

    async def user_payments(self, user_id: str) -> Sequence[Payment]:
        """The user's payments, ascending by ``listing.sort_key`` (the per-user index)."""

    async def sweep(self, now: float) -> list[str]:
        """Drop what retention allows at wall time ``now``; return the dropped payment ids.

        Settled payments (COMPLETED, FAILED, CANCELLED, REFUNDED, EXPIRED) go
        RETENTION_MS after their last change, idempotency keys at their TTL.
        Costs O(expired), not O(stored).
        """


@dataclass(frozen=True, slots=True)
class Maintenance:
    """What one ``SharedStore.maintain`` found."""

    lapsed: bool  # this replica's lease had ended: others may have taken its payments
    claimed: list[tuple[str, float]]  # (payment id, due at): now this replica's to fire
    changes: list[StatusChange]  # undelivered changes: now this replica's to announce
    overdue_own: list[str]  # own due payments that no local timer knows (a lost insert)


class SharedStore(PaymentStore, Protocol):
    """A store several replicas share (Redis): see ``adapters.redis_store``."""

    replica_id: str
    timeout_s: float  # the bound on one call: leaving waits at most this long

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Send the store's calls until cancelled: runs for the store's whole lifetime."""

    @property
    def available(self) -> AsyncBool:
        """False while the store is unreachable (readiness follows it)."""

    def track_deliveries(self, delivering: Callable[[str], bool]) -> None:
        """``delivering(event_id)``: whether a local channel still has that change."""

    def outbox_done(self, event_id: str) -> None:
        """Every channel is finished with the change ``event_id``: forget it."""

    async def maintain(self, now: float) -> Maintenance:
        """Renew this replica's lease; take over what vanished replicas left."""

    async def hand_over(self, *, leave: bool) -> tuple[int, int]:
        """Give this replica's due payments (and, leaving, its outbox) to the others."""


class Notifier(Protocol):
    """A delivery channel; ``paysim.outbox.Outbox`` is one too, fanning out to the others."""

    def announces(self, change: StatusChange) -> bool:
        """Whether ``notify`` would send anything for ``change``.

        The store keeps only such changes for delivery (``paysim.outbox``).
        """

    async def notify(self, change: StatusChange) -> None:
        """Announce one status change (webhook, event bus, ...). Must not raise."""
