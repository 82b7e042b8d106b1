"""Backoff with full jitter: the one schedule type every retrier uses.

``Schedule`` is a capped exponential with full jitter (attempt n waits
uniform(0, min(cap, base * factor**(n-1))) s): the webhook dispatcher's retry
schedules are ``Schedule`` values, and so are the EventBridge publisher's
``PUBLISH_RETRY`` and ``STORE_RETRY``.

How a loop that met ``StoreUnavailable`` waits before it tries again:

A store outage is weather: every loop that needs the store (the Redis batch
sender's probe, lease renewal and takeover, the retention sweeper, a payment's
outcome timer) backs off and tries again, and nothing it holds is dropped.
They share one schedule, ``STORE_RETRY``: full jitter, doubling from 50 ms,
capped at 2 s, so a store that comes back is used again within about 2 s
(well inside a 5 s lease). ``Backoff`` counts one loop's consecutive failures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """Backoff: attempt n waits uniform(0, min(cap, base * factor**(n-1))) seconds."""

    base_s: float
    factor: float
    cap_s: float

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt ``attempt`` (1-based).

        The exponent stops growing at 64 (long past any cap), so a retrier that
        never gives up (the EventBridge publisher) cannot overflow a float.
        """
        return min(self.cap_s, self.base_s * self.factor ** min(attempt - 1, 64))

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))


STORE_RETRY = Schedule(base_s=0.05, factor=2.0, cap_s=2.0)

# The webhook retry schedules by name (WEBHOOK_RETRY_SCHEDULE): the one list of them.
SCHEDULES: dict[str, Schedule] = {
    "default": Schedule(base_s=1.0, factor=2.0, cap_s=300.0),
    "fast": Schedule(base_s=0.05, factor=2.0, cap_s=1.0),
    # Modelled on Toss Payments: 1, 4, 16, 64, 256, 1024, 4096 minutes.
    "toss": Schedule(base_s=60.0, factor=4.0, cap_s=4096 * 60.0),
}

_rng = random.Random()  # jitter only: nothing here needs to be reproducible


class Backoff:
    """One loop's consecutive failures; ``failed()`` gives the wait before the next try."""

    def __init__(self, schedule: Schedule = STORE_RETRY, rng: random.Random | None = None) -> None:
        self._schedule = schedule
        self._rng = rng if rng is not None else _rng
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; the seconds to wait before trying again."""
        self.failures += 1
        return self._schedule.delay(self.failures, self._rng)

    def reset(self) -> None:
        self.failures = 0

    @property
    def cap_s(self) -> float:
        return self._schedule.cap_s
