"""The service under measurement, in process: a PaymentService with a MemoryStore, a
notifier that drops every change, real Metrics and the Simulator in the caller's
nursery; and the process's resident memory from /proc.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from paysim.adapters.memory_store import MemoryStore
from paysim.config import SimulationSettings
from paysim.domain.models import (
    StatusChange,
)
from paysim.observability.metrics import Metrics
from paysim.service import PaymentService, ServiceParts
from paysim.simulator import Simulator

EPOCH = 1_700_000_000.0


class DropNotifier:
    """Takes every change and keeps nothing: the notifier's cost is not measured here."""

    def announces(self, change: StatusChange) -> bool:
        return False

    async def notify(self, change: StatusChange) -> None:
        return None


def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def make_service(
    nursery: trio.Nursery,
    store: MemoryStore,
    settings: SimulationSettings,
    wall_clock: Callable[[], float] = time.time,
) -> PaymentService:
    metrics = Metrics()
    simulator = Simulator(nursery, settings.max_pending_payments, metrics.pending_changed)
    return PaymentService(
        ServiceParts(
            store=store,
            simulator=simulator,
            notifier=DropNotifier(),
            metrics=metrics,
        ),
        settings,
        wall_clock=wall_clock,
    )
