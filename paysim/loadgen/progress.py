"""Progress on stderr while a run goes: elapsed time, calls so far, current rate, errors."""

from __future__ import annotations

import time
from typing import TextIO


class ProgressLine:
    """The live line on stderr: elapsed time, calls, current rate, errors.

    On a terminal it is redrawn in place twice a second; elsewhere (a CI log)
    a line is printed every 10 s, so short runs print nothing and long ones
    show they are alive.
    """

    def __init__(self, stream: TextIO, enabled: bool | None, expected: int | None) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._enabled = enabled if enabled is not None else True
        self._interval = 0.5 if self._tty else 10.0
        self._expected = expected
        self._t0 = time.monotonic()
        self._last = (self._t0, 0)
        self._shown = False

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._last = (t0, 0)

    def __call__(self, per_worker: list[tuple[int, int]]) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._last[0] < self._interval or now < self._t0:
            return
        done = sum(d for d, _ in per_worker)
        errors = sum(e for _, e in per_worker)
        rate = (done - self._last[1]) / (now - self._last[0])
        self._last = (now, done)
        of = f"/{self._expected:,}" if self._expected else ""
        line = f"  {now - self._t0:6.1f} s  {done:,}{of} calls  {rate:,.0f}/s  {errors:,} errors"
        if self._tty:
            self._stream.write("\r" + line + "\033[K")
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown and self._tty:
            self._stream.write("\r\033[K")
            self._stream.flush()
