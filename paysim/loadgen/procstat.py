"""CPU accounting from ``/proc`` (Linux): a process's CPU seconds, and every core's busy time.

Used to tell who was the bottleneck (a saturated server, a saturated
generator) and whether something else on the host took CPU during the run
(other benchmarks on a shared machine make any figure meaningless). Off
Linux every reader returns None and the report says the figure is unknown.
"""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads); None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    # After "pid (comm) ": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def host_busy_s() -> float | None:
    """Busy CPU seconds summed over all cores since boot (all but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            first = f.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(v) for v in first[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guests are in user.
    busy = sum(values[:8]) - values[3] - values[4]
    return busy / _TICKS
