"""Loops that keep the store in shape: ``every`` and the retention sweeper.

``every(interval_s, attempt, backoff)`` runs ``attempt`` at a fixed rate
(``trio_util.periodic``: the attempt's own time counts toward the interval).
An attempt that fails (returns False: the store did not answer, or another
error it logged) is tried again with backoff (``paysim.backoff``), not at the
next interval, and the interval starts again from the first success. The
retention sweeper here and the lease loop (``paysim.replica``) both run on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import NoReturn, Protocol

import structlog
import trio
from trio_util import periodic

from paysim.backoff import Backoff
from paysim.errors import StoreUnavailable

log = structlog.get_logger("paysim.app")


async def every(
    interval_s: float,
    attempt: Callable[[], Awaitable[bool]],
    backoff: Backoff,
    *,
    at_once: bool = True,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run ``attempt`` every ``interval_s`` until cancelled; see the module docstring.

    ``at_once``: the first attempt now, else after one interval. ``task_status``
    reports started after the first attempt, whether it succeeded or not.
    """
    skip = not at_once
    while True:
        async with aclosing(periodic(interval_s)) as ticks:
            async for _ in ticks:
                if skip:  # the interval starts now: the first tick is not an attempt
                    skip = False
                    continue
                succeeded = await attempt()
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                if not succeeded:
                    break
        while not await _after(backoff.failed(), attempt):
            pass
        backoff.reset()
        skip = True


async def _after(delay_s: float, attempt: Callable[[], Awaitable[bool]]) -> bool:
    await trio.sleep(delay_s)
    return await attempt()


class Sweeps(Protocol):
    async def sweep(self) -> int: ...


async def run_sweeper(service: Sweeps, interval_s: float, backoff: Backoff | None = None) -> None:
    """Retention: ``service.sweep()`` every ``interval_s``, until cancelled.

    A store that does not answer is logged once and tried again with backoff;
    any other error is logged (its kind, never a trace) and tried again alike.
    """
    backoff = backoff if backoff is not None else Backoff()

    async def sweep() -> bool:
        try:
            await service.sweep()
        except StoreUnavailable:
            if not backoff.failures:
                log.warning("retention sweep failed: the store is unavailable; retrying")
            return False
        except Exception as exc:
            log.exception("retention sweep failed; retrying", error=type(exc).__name__)
            return False
        return True

    await every(interval_s, sweep, backoff, at_once=False)
