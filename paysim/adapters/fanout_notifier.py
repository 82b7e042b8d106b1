"""Hands each status change to several notifiers, in order (webhooks, then events).

With ``on_finished`` it also tracks each change until every channel has
called ``channel_done(event_id)`` (delivered or given up), and then calls
``on_finished(event_id)``: the shared store forgets the change from its
outbox only then, so a replica that dies mid-delivery leaves it to another.
A change no channel announces (``announces``) is not tracked: the shared store
never kept it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from paysim.domain.models import StatusChange
from paysim.ports import Notifier


class FanoutNotifier:
    def __init__(
        self,
        notifiers: Sequence[Notifier] = (),
        on_finished: Callable[[str], None] | None = None,
    ) -> None:
        self._notifiers = list(notifiers)
        self._on_finished = on_finished
        self._remaining: dict[str, int] = {}

    def add(self, notifier: Notifier) -> None:
        """Add a channel (before the first change)."""
        self._notifiers.append(notifier)

    def announces(self, change: StatusChange) -> bool:
        return any(notifier.announces(change) for notifier in self._notifiers)

    async def notify(self, change: StatusChange) -> None:
        if self._on_finished is not None and self.announces(change):
            # Before the channels run: one may finish at once (no webhook URL).
            # A change no channel announces is not tracked: nothing keeps it.
            event_id = change.event_id
            self._remaining[event_id] = self._remaining.get(event_id, 0) + len(self._notifiers)
        for notifier in self._notifiers:
            await notifier.notify(change)

    def channel_done(self, event_id: str) -> None:
        """One channel is finished with ``event_id`` (each calls this once per change)."""
        left = self._remaining.get(event_id, 0) - 1
        if left < 0:  # not tracked (no on_finished, or nothing announces it)
            return
        if left > 0:
            self._remaining[event_id] = left
            return
        self._remaining.pop(event_id, None)
        assert self._on_finished is not None  # only then is anything tracked
        self._on_finished(event_id)

    def delivering(self, event_id: str) -> bool:
        """Whether some channel is not finished with ``event_id`` yet."""
        return event_id in self._remaining

    @property
    def unfinished(self) -> int:
        return len(self._remaining)
