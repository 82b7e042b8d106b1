"""The in-memory store: one process owns its payments. The default, and the test twin.

Three structures besides the payments themselves, each kept in step on
every write, so that no read or sweep ever scans everything:

* **a per-user index**: each user's payment ids in ascending order of
  ``listing.sort_key`` (creation time in ns, then the id). The ids are the
  payments' own strings; the keys are worked out from the payments when an
  insert or a drop searches the list, not kept (a key tuple and its int were
  about 100 B per payment). ListPayments reads one user's list, so its cost
  does not grow with other users' payments. Creation times arrive in order,
  so an insert is almost always an append.
* **a retention queue**: ``(drop at, id)`` appended whenever a payment
  becomes, or changes while, settled (COMPLETED or terminal). With one
  retention period the queue is ordered by time, so the sweep pops from the
  front only what is due: O(expired). An entry whose payment changed again
  later (a refund) or is already gone is skipped; each entry is popped once.
* **idempotency keys** in an insertion-ordered dict with one TTL, swept from
  the front the same way.

After a large sweep (COMPACT_AFTER payments dropped since the last) the
payments' dict is copied (a dict never shrinks its table as entries go) and
the C allocator's free pages go back to the OS (``runtime.return_free_memory``):
a storm's memory is returned once it has been swept, not kept for good.

Times are the payments' own wall-clock stamps (``updated_at``) and the
``now`` the caller passes, so tests drive retention with a fake clock.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from collections.abc import Sequence

from paysim import runtime, sparse_tables
from paysim.domain.listing import Key, sort_key
from paysim.domain.models import Payment, StatusChange
from paysim.ports import IdempotencyRecord

COMPACT_AFTER = 50_000  # payments dropped between two compactions


class MemoryStore:
    """Dict-backed ``PaymentStore``. Never awaits, so every method is atomic under trio."""

    def __init__(self, retention_s: float = 86_400.0) -> None:
        self._retention_s = retention_s
        self._payments: dict[str, Payment] = {}
        self._by_user: dict[str, list[str]] = {}  # user id -> payment ids, ascending key
        self._retention: deque[tuple[float, str]] = deque()
        # (user_id, key) -> (expires_at, record), oldest first: expiry sweeps from the front.
        self._keys: OrderedDict[tuple[str, str], tuple[float, IdempotencyRecord]] = OrderedDict()
        self._dropped_since_compaction = 0
        self.compactions = 0  # how often a large sweep gave memory back

    def __len__(self) -> int:
        return len(self._payments)

    @property
    def idempotency_keys(self) -> int:
        return len(self._keys)

    async def insert(self, payment: Payment) -> None:
        pid = payment.payment_intent_id
        self._payments[pid] = payment
        entries = self._by_user.setdefault(payment.user_id, [])
        if not entries or self._key(entries[-1]) < sort_key(payment):
            entries.append(pid)
        else:
            bisect.insort(entries, pid, key=self._key)
        self._note_settled(payment)

    async def get(self, payment_intent_id: str) -> Payment | None:
        return self._payments.get(payment_intent_id)

    async def get_for_update(self, payment_intent_id: str) -> Payment | None:
        return self._payments.get(payment_intent_id)

    async def compare_and_set(
        self, expected_version: int, new: Payment, change: StatusChange | None = None
    ) -> bool:
        current = self._payments.get(new.payment_intent_id)
        if current is None or current.version != expected_version:
            return False
        self._payments[new.payment_intent_id] = new
        self._note_settled(new)
        return True

    async def user_payments(self, user_id: str) -> Sequence[Payment]:
        payments = self._payments
        return [payments[pid] for pid in self._by_user.get(user_id, ())]

    async def claim_idempotency(
        self, user_id: str, key: str, record: IdempotencyRecord, ttl_s: float, now: float
    ) -> IdempotencyRecord | None:
        self._sweep_keys(now)
        existing = self._keys.get((user_id, key))
        if existing is not None:
            return existing[1]
        self._keys[(user_id, key)] = (now + ttl_s, record)
        return None

    async def release_idempotency(self, user_id: str, key: str, unless_created: str = "") -> None:
        if unless_created and unless_created in self._payments:
            return
        self._keys.pop((user_id, key), None)

    async def complete_idempotency(self, user_id: str, key: str, record: IdempotencyRecord) -> None:
        existing = self._keys.get((user_id, key))
        if existing is not None:
            self._keys[(user_id, key)] = (existing[0], record)  # same place, same expiry

    async def sweep(self, now: float) -> list[str]:
        self._sweep_keys(now)
        dropped: list[str] = []
        queue = self._retention
        retention = self._retention_s
        while queue and queue[0][0] <= now:
            _, pid = queue.popleft()
            payment = self._payments.get(pid)
            if (
                payment is None
                or not payment.status.is_settled
                or payment.updated_at + retention > now
            ):
                continue  # gone already, or changed since: a later entry stands for it
            self._drop(payment)
            dropped.append(pid)
        self._dropped_since_compaction += len(dropped)
        if self._dropped_since_compaction >= COMPACT_AFTER:
            self._compact()
        return dropped

    def _compact(self) -> None:
        self._dropped_since_compaction = 0
        sparse_tables.shrink_dict(self._payments)  # in place: see shrink_dict
        runtime.return_free_memory()
        self.compactions += 1

    def _note_settled(self, payment: Payment) -> None:
        if payment.status.is_settled:
            self._retention.append(
                (payment.updated_at + self._retention_s, payment.payment_intent_id)
            )

    def _key(self, payment_intent_id: str) -> Key:
        """An index entry's sort key (every indexed payment is in ``_payments``)."""
        return sort_key(self._payments[payment_intent_id])

    def _drop(self, payment: Payment) -> None:
        pid = payment.payment_intent_id
        entries = self._by_user[payment.user_id]
        index = bisect.bisect_left(entries, sort_key(payment), key=self._key)
        if index < len(entries) and entries[index] == pid:
            del entries[index]
        if not entries:
            del self._by_user[payment.user_id]
        del self._payments[pid]  # after the search, which reads the payments

    def _sweep_keys(self, now: float) -> None:
        keys = self._keys
        while keys:
            first = next(iter(keys))
            if keys[first][0] > now:
                return
            del keys[first]
