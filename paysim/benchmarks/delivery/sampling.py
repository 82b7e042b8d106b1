"""Measurement during the run: CPU per process and per core, and /metrics, once a second."""

from __future__ import annotations

import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from paysim.loadgen.scrape import scrape


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc; nan when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _core_busy() -> dict[str, tuple[float, float, float]]:
    """Per core: (busy, of which irq and softirq, total) jiffies from /proc/stat."""
    out: dict[str, tuple[float, float, float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d+ ", line):
            name, *values = line.split()
            numbers = [float(v) for v in values[:8]]
            idle = numbers[3] + numbers[4]
            out[name] = (sum(numbers) - idle, numbers[5] + numbers[6], sum(numbers))
    return out


@dataclass
class Sample:
    t: float
    cpu: dict[str, float]  # process name -> cpu seconds so far
    cores: dict[str, tuple[float, float, float]]
    metrics: dict[str, float]


class Sampler:
    def __init__(self, pids: dict[str, int], http_port: int, period: float = 1.0) -> None:
        self.pids = pids
        self.http_port = http_port
        self.period = period
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def sample(self) -> Sample:
        cpu = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        cpu["generator"] = sum(os.times()[:2])
        try:
            metrics = scrape(self.http_port)
        except OSError:
            metrics = {}
        s = Sample(time.time(), cpu, _core_busy(), metrics)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        for _ in range(100_000):  # bounded; stopped long before
            if self._stop.wait(self.period):
                return
            self.sample()

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def window(self, start: float, end: float) -> tuple[Sample, Sample] | None:
        inside = [s for s in self.samples if start <= s.t <= end]
        return (inside[0], inside[-1]) if len(inside) >= 2 else None
