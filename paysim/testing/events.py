"""EventBridge events, captured without AWS: ``sim.events``.

``EventCapture`` stands in for the boto3 ``events`` client that the real
``EventPublisher`` calls: the publisher batches, retries and reports exactly
as in production, and ``put_events`` records each entry instead of sending
it. Its ``run_blocking`` tells the wiring to call it inline rather than in a
worker thread, so under trio's MockClock the clock does not jump while a
thread runs (``paysim.wiring.open_outbox``).

``EventLog`` is one scope's view: the events whose ``reservation_id`` or
``user_id`` starts with the scope's prefix (``sim.reservation_id()`` and
``sim.user_id`` make such ids). To send the events to moto instead, pass a
boto3 client to ``run_paysim(events_client=...)``; ``sim.events`` then stays
empty and the test reads the queue.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from paysim.testing.feed import Cursor, Feed
from paysim.testing.inbox import DEFAULT_TIMEOUT_S, status_name


@dataclass(frozen=True)
class Event:
    """One PutEvents entry: ``detail`` is the parsed Detail JSON (CONTRACT.md §3)."""

    source: str
    detail_type: str
    bus_name: str
    detail: dict[str, Any]
    published_at: float  # trio's clock

    @property
    def payment_id(self) -> str:
        return str(self.detail.get("payment_id", ""))

    @property
    def status(self) -> str:
        return str(self.detail.get("status", ""))


class EventCapture:
    """A boto3 ``events`` client's ``put_events``, in memory; every entry goes to ``feed``."""

    def __init__(self) -> None:
        self.feed: Feed[Event] = Feed()
        self._ids = itertools.count(1)

    async def run_blocking(self, call: Callable[[], Any]) -> Any:
        return call()  # nothing here blocks

    def put_events(self, *, Entries: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
        now = trio.current_time()
        answers = []
        for entry in Entries:
            self.feed.append(
                Event(
                    entry["Source"],
                    entry["DetailType"],
                    entry.get("EventBusName", ""),
                    json.loads(entry["Detail"]),
                    now,
                )
            )
            answers.append({"EventId": f"evt-{next(self._ids)}"})
        return {"FailedEntryCount": 0, "Entries": answers}


class EventLog:
    """The events of one scope, in publication order."""

    def __init__(self, capture: EventCapture, prefix: str) -> None:
        def belongs(event: Event) -> bool:
            d = event.detail
            return any(str(d.get(k, "")).startswith(prefix) for k in ("reservation_id", "user_id"))

        self._cursor = Cursor(capture.feed, belongs if prefix else lambda event: True)

    @property
    def published(self) -> list[Event]:
        return self._cursor.all()

    def for_payment(self, payment_id: str) -> list[Event]:
        return [e for e in self.published if e.payment_id == payment_id]

    async def next(
        self,
        payment_id: str,
        status: str | int | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Event:
        """The next event for ``payment_id`` (with ``status``); ``NotReceived`` on timeout."""
        wanted = status_name(status)

        def match(e: Event) -> bool:
            return e.payment_id == payment_id and (wanted is None or e.status == wanted)

        what = f"event for {payment_id}" + (f" with {wanted}" if wanted else "")
        return await self._cursor.next(match, what, timeout_s)
