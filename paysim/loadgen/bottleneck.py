"""Who limited the run: the server, the generator, both, or neither.

A load generator's figure is only the server's figure if the generator was
not the bottleneck, so every report says which side was saturated and why:

* a worker process that used more than ``GENERATOR_BUSY`` of a core, or
  client cores that were that busy with our workers, means the generator
  was at its limit (Python clients cost far more CPU per call than h2load;
  past about 80 % an asyncio loop no longer idles between batches of
  answers, so its own queueing starts to show in the latency it measures);
* in open loop, a send-lateness p99 above ``--lateness-ms``, or an offered
  rate short of the one asked for, means the generator did not keep its
  schedule, so the rate was not really offered;
* a spawned server that used more than ``SERVER_BUSY`` of its cores was
  saturated: the figure is the server's capacity at this concurrency;
* CPU of other processes on the host (``/proc/stat`` minus ours) above
  ``FOREIGN`` of a core is reported as a disturbance: re-run when it is quiet.

Without ``--spawn`` the server's CPU is unknown, so only the generator side
can be judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GENERATOR_BUSY = 0.80
SERVER_BUSY = 0.90
FOREIGN = 0.10
SHORT_RATE = 0.95


@dataclass(frozen=True)
class Inputs:
    wall_s: float
    worker_cpu_s: list[float]
    client_cores: tuple[int, ...] | None
    server_cpu_s: float | None = None
    server_cores: int = 1
    foreign_share: float | None = None  # cores' worth used by other processes
    rps: float | None = None  # asked for (open loop)
    offered_rps: float | None = None  # achieved send rate (open loop)
    lateness_p99_s: float | None = None
    lateness_limit_s: float = 0.010


@dataclass(frozen=True)
class Assessment:
    verdict: str  # "server", "generator", "both", "neither", "unknown"
    generator_reasons: list[str] = field(default_factory=list)
    server_reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    worker_cpu: list[float] = field(default_factory=list)  # share of a core, per worker
    server_cpu: float | None = None  # share of its cores
    foreign_cpu: float | None = None  # cores' worth used by other processes

    def sentence(self) -> str:
        """One line for the text report."""
        why = "; ".join(self.generator_reasons + self.server_reasons)
        return {
            "server": f"the server ({why})",
            "generator": f"THE LOAD GENERATOR, not the server ({why}): the figures understate "
            "the server; give the workers more cores (--client-cores, --procs)",
            "both": f"both the server and the generator ({why})",
            "neither": "neither side was saturated (latency- or concurrency-bound: "
            "raise --concurrency or --rps to load the server further)",
            "unknown": "unknown (the server's CPU is only known with --spawn); "
            "the generator was not saturated",
        }[self.verdict]


def _generator_reasons(inputs: Inputs, shares: list[float]) -> list[str]:
    reasons = [
        f"worker {i} used {share:.0%} of a core"
        for i, share in enumerate(shares)
        if share > GENERATOR_BUSY
    ]
    if inputs.client_cores and len(shares) > len(inputs.client_cores):
        busy = sum(shares) / len(inputs.client_cores)
        if busy > GENERATOR_BUSY:
            reasons.append(f"the client cores were {busy:.0%} busy")
    if inputs.lateness_p99_s is not None and inputs.lateness_p99_s > inputs.lateness_limit_s:
        reasons.append(
            f"send lateness p99 {inputs.lateness_p99_s * 1e3:.1f} ms > "
            f"{inputs.lateness_limit_s * 1e3:.0f} ms: the generator fell behind its schedule"
        )
    if (
        inputs.rps
        and inputs.offered_rps is not None
        and inputs.offered_rps < SHORT_RATE * inputs.rps
    ):
        reasons.append(f"it offered {inputs.offered_rps:,.0f}/s of the {inputs.rps:,.0f}/s asked")
    return reasons


def assess(inputs: Inputs) -> Assessment:
    """Judge one run from its CPU figures and, in open loop, its schedule."""
    wall = max(inputs.wall_s, 1e-9)
    shares = [cpu / wall for cpu in inputs.worker_cpu_s]
    generator = _generator_reasons(inputs, shares)
    server_share = None
    server: list[str] = []
    if inputs.server_cpu_s is not None:
        server_share = inputs.server_cpu_s / wall / max(inputs.server_cores, 1)
        if server_share > SERVER_BUSY:
            server.append(f"it used {server_share:.0%} of its core(s)")
    warnings = []
    foreign = inputs.foreign_share
    if foreign is not None and foreign > FOREIGN:
        warnings.append(
            f"other processes on this host used {foreign:.0%} of a core during the run: "
            "the figures may be disturbed; re-run when the machine is quiet"
        )
    if generator and server:
        verdict = "both"
    elif generator:
        verdict = "generator"
    elif server:
        verdict = "server"
    elif server_share is not None:
        verdict = "neither"
    else:
        verdict = "unknown"
    return Assessment(verdict, generator, server, warnings, shares, server_share, foreign)
