"""Live updates for the console's pages: one bounded queue per subscriber.

Theory of operation: the recorder ``publish``-es each update under a key (a
payment id, ``"overview"``...). ``publish`` never waits and never fails: it
puts the update in every subscriber's queue and wakes it. A queue holds at
most ``max_pending`` keys; a newer update for a key already queued replaces
it (coalescing: a page only needs a payment's latest state), and when the
queue is full the oldest key is dropped and counted. The subscriber's
Server-Sent Events loop (``paysim.console.sse``) takes what is queued in one
go and tells the page how many updates it dropped, so the page reloads its
list instead of showing a stale one. A slow or stalled page therefore costs
the payments nothing but a dict update.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import trio
from trio_util import AsyncValue


@dataclass(frozen=True, slots=True)
class Update:
    event: str  # the SSE event name: "payment", "overview", "endpoint"
    data: str  # JSON


class Subscriber:
    def __init__(self, max_pending: int) -> None:
        self._max = max_pending
        self._queue: OrderedDict[str, Update] = OrderedDict()
        self._wake = trio.Event()
        self.dropped = 0  # since the last take

    def offer(self, key: str, update: Update) -> None:
        if key in self._queue:
            self._queue[key] = update  # coalesce: only the latest matters
        else:
            self._queue[key] = update
            if len(self._queue) > self._max:
                self._queue.popitem(last=False)
                self.dropped += 1
        self._wake.set()

    async def wait(self) -> None:
        await self._wake.wait()

    def take(self) -> tuple[list[Update], int]:
        """Everything queued, oldest first, and how many were dropped since the last take."""
        updates, dropped = list(self._queue.values()), self.dropped
        self._queue.clear()
        self.dropped = 0
        self._wake = trio.Event()
        return updates, dropped


class Hub:
    def __init__(self, max_pending: int = 256) -> None:
        self._max_pending = max_pending
        self._subscribers: set[Subscriber] = set()
        # How many pages are open: what samples only while someone looks waits on it.
        self.watching = AsyncValue(0)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(self._max_pending)
        self._subscribers.add(subscriber)
        self.watching.value = len(self._subscribers)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self.watching.value = len(self._subscribers)

    def publish(self, key: str, event: str, data: str) -> None:
        if not self._subscribers:
            return
        update = Update(event, data)
        for subscriber in self._subscribers:
            subscriber.offer(key, update)
