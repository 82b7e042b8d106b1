"""Parking a task until ``trio.lowlevel.reschedule``, for about 400 bytes less.

Why (issue 18, goal 2): every pending payment parks one timer task, a million
of them in an on-sale storm. ``await trio.lowlevel.wait_task_rescheduled(abort)``
keeps, for as long as the task is parked, a coroutine of its own (216 B), the
``_async_yield`` generator and its frame (264 B in three blocks) and the
``WaitTaskRescheduled`` message (64 B): about 540 B per parked task
(tracemalloc, 20,000 timers). ``await spot`` on a ``ParkingSpot`` keeps nothing
beyond the spot itself, which its owner holds anyway.

How: trio drives a task with ``task.coro.send(value)``, and the innermost
awaitable answers with a trap message. ``WaitTaskRescheduled(abort_func)``
parks the task: trio stores ``abort_func`` (called on cancellation, see
``trio.lowlevel.wait_task_rescheduled``), drops the message, and later sends
the ``Outcome`` given to ``reschedule`` in, which the awaiter unwraps. A
``ParkingSpot`` is its own ``__await__`` iterator: its first step yields
``WaitTaskRescheduled(self)``, its ``send`` unwraps the outcome (returns the
value, or raises the error, e.g. ``Cancelled``). That is the whole of what
trio's own ``wait_task_rescheduled`` does.

The message class is private to trio (``trio._core._traps``). It is used only
when it exists and trio's version is one this was checked against
(``TESTED_TRIO``); otherwise ``await spot`` is the public
``wait_task_rescheduled(spot)``, which behaves the same with the larger
footprint. ``tests/unit/service/test_parking.py`` pins the protocol (park,
reschedule with a value and with an error, abort on cancellation, a refused
abort, both paths), so a trio that changes it fails there first.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, cast

import outcome
import trio

# The trio releases this was checked against (tests/unit/service/test_parking.py):
# widen it only after those tests pass on the new release.
TESTED_TRIO = ((0, 35), (0, 35))


def _trio_version() -> tuple[int, int]:
    major, minor = trio.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def trio_checked() -> bool:
    """Whether the installed trio is a release in TESTED_TRIO."""
    return TESTED_TRIO[0] <= _trio_version() <= TESTED_TRIO[1]


def _load_trap() -> Callable[[object], object] | None:
    """trio's private trap message class, or None (then the public API is used)."""
    if not trio_checked():
        return None
    try:
        from trio._core._traps import WaitTaskRescheduled
    except ImportError:
        return None
    return cast("Callable[[object], object]", WaitTaskRescheduled)


_trap = _load_trap()


class ParkingSpot:
    """Where one task waits: ``await spot`` parks the current task until
    ``trio.lowlevel.reschedule(task, outcome)`` and returns (or raises) that outcome.

    A subclass is the abort function too: ``__call__(raise_cancel)`` runs when
    the parked task is cancelled, exactly as for ``wait_task_rescheduled``
    (return ``Abort.SUCCEEDED`` and trio resumes the task with ``Cancelled``).
    One spot serves one waiting task at a time; the caller records the task
    (``trio.lowlevel.current_task()``) before it awaits, to reschedule it.
    """

    __slots__ = ()

    def __call__(self, raise_cancel: Callable[[], object]) -> trio.lowlevel.Abort:
        raise NotImplementedError

    def __await__(self) -> Generator[Any, Any, Any]:
        if _trap is None:
            # The coroutine is awaited: its __await__ is what the caller's await drives.
            return trio.lowlevel.wait_task_rescheduled(self).__await__()  # noqa: ASYNC105
        return cast("Generator[Any, Any, Any]", self)

    # The iterator protocol of ``await``: the first step parks, the next one resumes.
    def __next__(self) -> object:
        assert _trap is not None
        return _trap(self)

    def send(self, value: outcome.Outcome[Any] | None) -> object:
        if value is None:  # the first step, as __next__
            return self.__next__()
        raise StopIteration(value.unwrap())
