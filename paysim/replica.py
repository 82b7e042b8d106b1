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

A lease that lapsed while this replica still ran (a long pause) is logged:
others may now fire its payments too, which the compare-and-set makes
harmless, and may announce its changes again (at least once, same id).

A store that does not answer is logged and retried at the next interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
import trio

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
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hold the lease and take over from vanished replicas until cancelled."""
    first = True
    while True:
        try:
            found = await store.maintain(wall_clock())
        except StoreUnavailable:
            log.warning("lease renewal failed; retrying", replica_id=store.replica_id)
        else:
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
        await trio.sleep(interval_s)
