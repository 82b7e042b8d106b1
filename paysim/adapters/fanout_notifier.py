"""Hands each status change to several notifiers, in order (webhooks, then events)."""

from __future__ import annotations

from collections.abc import Sequence

from paysim.domain.models import StatusChange
from paysim.ports import Notifier


class FanoutNotifier:
    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self._notifiers = tuple(notifiers)

    async def notify(self, change: StatusChange) -> None:
        for notifier in self._notifiers:
            await notifier.notify(change)
