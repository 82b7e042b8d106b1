"""A notifier that remembers every change: the stand-in until delivery is wired."""

from __future__ import annotations

import trio

from paysim.domain.models import StatusChange


class RecordingNotifier:
    def __init__(self) -> None:
        self.changes: list[StatusChange] = []
        self._changed = trio.Event()

    def announces(self, change: StatusChange) -> bool:
        return True

    async def notify(self, change: StatusChange) -> None:
        self.changes.append(change)
        self._changed.set()
        self._changed = trio.Event()

    def for_payment(self, payment_intent_id: str) -> list[StatusChange]:
        return [c for c in self.changes if c.payment.payment_intent_id == payment_intent_id]

    async def wait_for(self, count: int) -> None:
        """Block until at least ``count`` changes were recorded."""
        while len(self.changes) < count:
            await self._changed.wait()
