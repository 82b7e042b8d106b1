"""A replica among others: its lease, and taking over what vanished replicas left.

Only with a shared store. Every STORE_TAKEOVER_INTERVAL_MS, ``Replica.run``
calls ``store.maintain``, which renews this replica's lease (STORE_LEASE_MS)
and moves everything a replica whose lease ended had (due outcomes, changes
not yet delivered) into shared pools, then claims a share of them. Claimed
outcomes get a local timer at their due time (at once if overdue); claimed
changes are announced again under their own event id. So a replica killed
with SIGKILL loses nothing: within lease + interval another one holds its
payments, and each outcome is still applied once (every write is a
compare-and-set on the payment's version).

A lease that lapsed while this replica still ran (a long pause, or a store
outage longer than the lease) is logged: others may have taken its due
payments and undelivered changes. It then goes on as before, and that is
correct: its local timers still fire (the compare-and-set lets exactly one
replica apply each outcome, and takes the payment out of whichever replica's
due set holds it), its channels still deliver what they hold (another replica
may announce the same change too: at least once, same event id), and what the
others have not claimed yet it may claim back like any replica.

A store that does not answer is logged once and tried again with backoff
(``backoff``, capped well under the lease), not at the next interval, so
the lease is renewed soon after the store is back; one success logs the
recovery and the loop returns to its interval (``upkeep.every``).

When the process drains, ``hand_over`` stops the local timers and gives their
payments to the others (the "handover" policy), and ``leave`` ends the lease
loop and hands over whatever the outbox still holds. Owned by the composition
root: ``run`` runs in the simulator's lifetime, which it calls into.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
import trio

from paysim.backoff import Backoff
from paysim.errors import StoreUnavailable
from paysim.outbox import Outbox
from paysim.ports import SharedStore
from paysim.service import PaymentService
from paysim.upkeep import every

log = structlog.get_logger("paysim.replica")


class Replica:
    """This process among the replicas sharing ``store``: lease, takeover, handover."""

    def __init__(
        self,
        store: SharedStore,
        service: PaymentService,
        outbox: Outbox,
        interval_s: float,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._service = service
        self._outbox = outbox
        self._interval_s = interval_s
        self._now = wall_clock
        self._lease = trio.CancelScope()  # the lease and takeover loop; ``leave`` ends it
        self._backoff = Backoff()
        self._first = True

    async def run(
        self,
        *,
        backoff: Backoff | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hold the lease and take over from vanished replicas until ``leave`` or cancelled.

        Started once the first round (renew, take over, announce) is done.
        """
        if backoff is not None:
            self._backoff = backoff
        with self._lease:
            await every(self._interval_s, self._round, self._backoff, task_status=task_status)

    async def _round(self) -> bool:
        store, backoff = self._store, self._backoff
        first, self._first = self._first, False
        try:
            found = await store.maintain(self._now())
        except StoreUnavailable:
            if not backoff.failures:
                log.warning("lease renewal failed; retrying", replica_id=store.replica_id)
            return False
        if backoff.failures:
            log.info("lease renewed again", replica_id=store.replica_id, failures=backoff.failures)
        if found.lapsed and not first:
            log.warning(
                "lease had lapsed; other replicas may have taken over this one's payments",
                replica_id=store.replica_id,
            )
        adopted = sum(self._service.adopt(pid, due) for pid, due in found.claimed)
        overdue = sum(self._service.adopt(pid, self._now()) for pid in found.overdue_own)
        for change in found.changes:
            await self._outbox.take_over(change)
        if found.claimed or found.changes or overdue:
            log.info(
                "took over payments", due=adopted, changes=len(found.changes), overdue_own=overdue
            )
        return True

    async def hand_over(self) -> None:
        """Stop the local timers and give their payments to the other replicas."""
        stopped = self._service.release_timers()
        try:
            moved, _ = await self._store.hand_over(leave=False)
        except StoreUnavailable:
            log.warning(
                "could not hand over pending payments; others take them when the lease ends",
                pending=len(stopped),
            )
            return
        log.info("pending payments handed over", count=moved, local_timers=len(stopped))

    async def leave(self) -> None:
        """End the lease; changes still undelivered go to the other replicas."""
        self._lease.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(self._store.timeout_s):
            try:
                _, changes = await self._store.hand_over(leave=True)
            except StoreUnavailable:
                log.warning("could not leave cleanly; others take over when the lease ends")
                return
            log.info("left the replica set", undelivered_handed_over=changes)
