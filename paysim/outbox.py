"""The outbox: the life of a status change after its compare-and-set.

Theory of operation
-------------------
Every status change the service makes goes through one ``Outbox``, which the
service sees as its ``Notifier`` port. The outbox decides and tracks; its
channels (the webhook dispatcher, the EventBridge publisher) only deliver and
report back.

1. **Kept or not.** Before the compare-and-set the service asks
   ``announces(change)``: the store keeps the change with the write (a shared
   store's outbox, see ``ports.SharedStore``) only if a channel here will
   announce it. A change nobody hears of (no webhook URL, no event bus) needs
   no delivery after a crash, so nothing keeps it and nothing forgets it.
2. **Handed out.** Once the write won, ``notify`` counts the channels that owe
   a "done" for the change and then gives it to each channel in order
   (webhooks, then events). The count comes first: a channel may be done at
   once (a change without a webhook URL).
3. **Done.** Each channel calls ``channel_done(event_id)`` once per change
   when it is finished with it: delivered, given up, or nothing to send. After
   the last one the outbox calls ``forget(event_id)`` (the shared store's
   ``outbox_done``), so a replica that dies mid-delivery leaves the change to
   another. Without ``forget`` (the in-memory store, or a test's recording
   channel) nothing is tracked. ``delivering`` tells the shared store which
   changes a local channel still holds (it re-announces the others after an
   outage).
4. **Taken over.** A change a vanished replica left (``take_over``) is
   announced again under its own event id if a channel here announces it;
   otherwise it is forgotten at once.
5. **Drained.** ``flush`` returns once every channel has sent what it holds
   (the channels flush together); ``undelivered`` names, per channel, the
   payment ids still held, for the shutdown report (``paysim.drain``).

Ownership: the composition root (``paysim.wiring.open_outbox``) builds the
outbox and its channels; the channels' tasks run in the outbox's lifetime,
which outlives the simulator and the servers that feed it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from paysim.domain.models import StatusChange
from paysim.ports import Notifier


async def _nothing_to_flush() -> None:
    return None


def _nothing_pending() -> list[str]:
    return []


@dataclass(frozen=True)
class Channel:
    """One way a change is announced, and what the drain needs from it."""

    name: str  # "webhook" or "event": the metrics label and the log wording
    notifier: Notifier
    flush: Callable[[], Awaitable[None]] = _nothing_to_flush  # returns once all went out
    pending_payment_ids: Callable[[], list[str]] = _nothing_pending  # one id per item held


class Outbox:
    """Fans each change out to the channels and tracks it until every one is done."""

    def __init__(
        self, channels: Sequence[Channel] = (), forget: Callable[[str], None] | None = None
    ) -> None:
        self._channels = list(channels)
        self._forget = forget
        self._remaining: dict[str, int] = {}  # event id -> channels not done with it

    def add(self, channel: Channel) -> None:
        """Add a channel (before the first change)."""
        self._channels.append(channel)

    # -- the Notifier port (what the service calls) -------------------------------
    def announces(self, change: StatusChange) -> bool:
        """Whether any channel announces ``change``: only then does the store keep it."""
        return any(channel.notifier.announces(change) for channel in self._channels)

    async def notify(self, change: StatusChange) -> None:
        if self._forget is not None and self.announces(change):
            event_id = change.event_id
            self._remaining[event_id] = self._remaining.get(event_id, 0) + len(self._channels)
        for channel in self._channels:
            await channel.notifier.notify(change)

    # -- what the channels report ------------------------------------------------
    def channel_done(self, event_id: str) -> None:
        """One channel is finished with ``event_id`` (each calls this once per change)."""
        left = self._remaining.get(event_id, 0) - 1
        if left < 0:  # not tracked (no forget, or nothing announces it)
            return
        if left > 0:
            self._remaining[event_id] = left
            return
        del self._remaining[event_id]
        assert self._forget is not None  # only then is anything tracked
        self._forget(event_id)

    def delivering(self, event_id: str) -> bool:
        """Whether some channel is not finished with ``event_id`` yet."""
        return event_id in self._remaining

    @property
    def unfinished(self) -> int:
        """Changes some channel is still delivering."""
        return len(self._remaining)

    # -- replicas sharing a store (see paysim.replica) ------------------------------
    async def take_over(self, change: StatusChange) -> bool:
        """Announce again a change another replica had not finished (same event id).

        False if nothing here announces it: then it is forgotten at once.
        """
        if not self.announces(change):
            if self._forget is not None:
                self._forget(change.event_id)
            return False
        await self.notify(change)
        return True

    # -- the drain (see paysim.drain) ---------------------------------------------
    async def flush(self) -> None:
        """Return once every channel has sent what it holds (they flush together)."""
        async with trio.open_nursery() as flushing:
            for channel in self._channels:
                flushing.start_soon(channel.flush)

    def undelivered(self) -> list[tuple[str, list[str]]]:
        """Per channel, one payment id per change it still holds."""
        return [(channel.name, channel.pending_payment_ids()) for channel in self._channels]
