"""A list that tests can wait on: what the webhook inbox and the event log share.

``Feed`` holds items in arrival order. ``Cursor`` is one reader's position in
it: ``await cursor.next(match)`` returns the first item after the position
that ``match`` accepts and moves past it, so a test that waits twice for a
payment's webhook gets the first delivery, then the second. Items the match
refuses are left for other waits (another payment, another status). Waits run
on trio's clock: under ``autojump_clock`` a missing item fails after the
timeout in virtual time, in milliseconds of real time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class NotReceived(AssertionError):
    """What a test waited for did not arrive in time. ``str()`` says what and how long."""


class Feed(Generic[T]):
    """Items in arrival order; ``append`` wakes every waiter."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = trio.Event()

    def append(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


class Cursor(Generic[T]):
    """One reader's position in a ``Feed``; items it has returned are behind it."""

    def __init__(self, feed: Feed[T], belongs: Callable[[T], bool]) -> None:
        self._feed = feed
        self._belongs = belongs  # the reader's scope: other scopes' items are invisible
        self._taken: set[int] = set()

    def all(self) -> list[T]:
        """Every item in this reader's scope, taken or not, in arrival order."""
        return [item for item in self._feed.items if self._belongs(item)]

    def _take(self, match: Callable[[T], bool]) -> T | None:
        for index, item in enumerate(self._feed.items):
            if index not in self._taken and self._belongs(item) and match(item):
                self._taken.add(index)
                return item
        return None

    async def next(self, match: Callable[[T], bool], what: str, timeout_s: float) -> T:
        """The next item ``match`` accepts; ``NotReceived`` after ``timeout_s`` (trio clock)."""
        with trio.move_on_after(timeout_s):
            while True:
                found = self._take(match)
                if found is not None:
                    return found
                await self._feed.changed()
        raise NotReceived(f"no {what} within {timeout_s:g} s")
