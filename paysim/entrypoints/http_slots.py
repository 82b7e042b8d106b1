"""The HTTP endpoint's connection cap, with eviction of the longest-waiting head.

``ConnectionSlots`` admits at most ``limit`` connections. When it is full, a
newcomer takes the slot of the connection that has waited longest for a
request head (a slowloris one, or an idle keep-alive one): that connection's
``Slot.scope`` is cancelled, which ends it. A connection that is answering a
request (``Slot.busy``) keeps its slot; only when every slot is busy does
``take`` refuse (None), and the caller answers 503.

Ownership: ``serve_http`` owns one ``ConnectionSlots``; each connection owns
its ``Slot``, wraps its life in ``Slot.scope`` and calls ``release`` once it
has closed. Everything runs in one trio thread: no locks.
"""

from __future__ import annotations

import trio


class Slot:
    """One connection's place among ``ConnectionSlots``; ``scope`` wraps the connection's life."""

    __slots__ = ("evicted", "scope", "slots")

    def __init__(self, slots: ConnectionSlots) -> None:
        self.slots = slots
        self.scope = trio.CancelScope()
        self.evicted = False

    def waiting(self) -> None:
        """The connection now waits for a request head: it may be evicted (oldest first)."""
        self.slots.waiting[self] = None

    def busy(self) -> None:
        """A request head has arrived: the connection keeps its slot until it answers."""
        self.slots.waiting.pop(self, None)

    def release(self) -> None:
        self.busy()
        if not self.evicted:  # an evicted slot was handed over already
            self.slots.used -= 1


class ConnectionSlots:
    """At most ``limit`` connections; when full, the one that has waited longest
    for a request head gives its slot to the newcomer."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.waiting: dict[Slot, None] = {}  # insertion order: the longest waiting first

    def take(self) -> Slot | None:
        if self.used < self.limit:
            self.used += 1
        elif self.waiting:
            victim = next(iter(self.waiting))
            del self.waiting[victim]
            victim.evicted = True
            victim.scope.cancel()
        else:
            return None
        return Slot(self)
