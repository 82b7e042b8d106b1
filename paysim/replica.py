"""A replica among others: its lease, and taking over what vanished replicas left.

Only with a shared store. Every STORE_TAKEOVER_INTERVAL_MS, ``run_replica``
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
recovery and the loop returns to its interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
import trio

from paysim.backoff import Backoff
from paysim.errors import StoreUnavailable
from paysim.ports import SharedStore
from paysim.service import PaymentService

log = structlog.get_logger("paysim.replica")


async def run_replica(
    store: SharedStore,
    service: PaymentService,
    interval_s: float,
    *,
    wall_clock: Callable[[], float] = time.time,
    backoff: Backoff | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hold the lease and take over from vanished replicas until cancelled."""
    backoff = backoff if backoff is not None else Backoff()
    first = True
    while True:
        delay = interval_s
        try:
            found = await store.maintain(wall_clock())
        except StoreUnavailable:
            if not backoff.failures:
                log.warning("lease renewal failed; retrying", replica_id=store.replica_id)
            delay = backoff.failed()
        else:
            if backoff.failures:
                log.info(
                    "lease renewed again", replica_id=store.replica_id, failures=backoff.failures
                )
                backoff.reset()
            if found.lapsed and not first:
                log.warning(
                    "lease had lapsed; other replicas may have taken over this one's payments",
                    replica_id=store.replica_id,
                )
            adopted = sum(service.adopt(pid, due) for pid, due in found.claimed)
            overdue = sum(service.adopt(pid, wall_clock()) for pid in found.overdue_own)
            for change in found.changes:
                if not await service.renotify(change):
                    store.outbox_done(change.event_id)  # nothing here announces it
            if found.claimed or found.changes or overdue:
                log.info(
                    "took over payments",
                    due=adopted,
                    changes=len(found.changes),
                    overdue_own=overdue,
                )
        if first:
            first = False
            task_status.started()
        await trio.sleep(delay)
