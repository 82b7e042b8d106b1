"""The default notifier until webhook and event delivery are wired: a debug log line."""

from __future__ import annotations

import structlog

from paysim.domain.models import StatusChange

log = structlog.get_logger("paysim.notifier")


class LogNotifier:
    async def notify(self, change: StatusChange) -> None:
        log.debug(
            "payment status changed",
            payment_id=change.payment.payment_intent_id,
            previous=change.previous.name,
            status=change.payment.status.name,
            event_id=change.event_id,
        )
