"""De-duplication of payment events by their EventBridge id.

EventBridge's event id is the same in every copy of one event. ``EventDedup``
keeps a bounded LRU of handled ids (``size``) and the ids being handled now:
a copy that arrives while the first is still being handled waits for its
outcome, then is a duplicate if the first was handled, or is handled itself
if the first failed. The reservation PATCH is idempotent anyway: this saves
calls, it does not carry correctness.

Owned by one ``ReservationWorker``; trio-only (no threads).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

import trio


class EventDedup:
    """Handled event ids (an LRU of ``size``) and the ones in progress."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._handled: OrderedDict[str, None] = OrderedDict()
        # One-shot events, one per id in progress: each is set once and dropped,
        # never re-armed (trio_util.AsyncValue would add nothing here).
        self._in_progress: dict[str, trio.Event] = {}

    @property
    def handled_ids(self) -> list[str]:
        """The remembered ids, least recently seen first."""
        return list(self._handled)

    async def handle_once(self, event_id: str, act: Callable[[], Awaitable[bool]]) -> bool | None:
        """None if ``event_id`` was already handled; else what ``act()`` says.

        ``act`` returns True when the event is handled (then its id is
        remembered), False when it was not (a later copy will try again).
        """
        while (pending := self._in_progress.get(event_id)) is not None:
            await pending.wait()  # another copy is being handled: learn its outcome
        if event_id in self._handled:
            self._handled.move_to_end(event_id)
            return None
        done = self._in_progress[event_id] = trio.Event()
        try:
            handled = await act()
        finally:
            del self._in_progress[event_id]
            done.set()
        if handled:
            self._handled[event_id] = None
            if len(self._handled) > self._size:
                self._handled.popitem(last=False)
        return handled
