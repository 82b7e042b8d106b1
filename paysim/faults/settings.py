"""CHAOS_API_* and CHAOS_TIMELINE: the API-side fault settings, read once at start.

* ``CHAOS_API_ENABLED`` (false): builds the fault policy even with zero rates,
  so that faults can be changed live (``/admin/faults``), asked for per call
  (the ``x-paysim-fault`` header) and reconciled (``/reconciliation``). Any
  rate, latency or timeline below turns it on too. Off, the gRPC edge holds
  no policy at all: nothing is decided, recorded or counted.
* ``CHAOS_API_RPCS`` (every PaymentService RPC): comma-separated RPC names.
* ``CHAOS_API_LATENCY``: ``fixed:MS``, ``uniform:MIN_MS:MAX_MS`` or
  ``lognormal:P50_MS:P99_MS``; ``CHAOS_API_LATENCY_WHEN``: before|after.
* ``CHAOS_API_ERROR_RATE`` and ``CHAOS_API_ERROR_CODES`` (``code:weight,...``
  of unavailable, deadline_exceeded, resource_exhausted, internal),
  ``CHAOS_API_RETRY_AFTER_MS`` (sent with resource_exhausted).
* ``CHAOS_API_LOST_ANSWER_RATE`` and ``CHAOS_API_LOST_ANSWER_MODE``
  (unavailable: the call fails after the work; reset: its stream is reset).
* ``CHAOS_API_SLOW_DRIP_RATE``: the fraction of calls whose answer, after
  the work, is sent ``CHAOS_API_SLOW_DRIP_CHUNK_BYTES`` (8; 1 to 16384) at a
  time, ``CHAOS_API_SLOW_DRIP_INTERVAL_MS`` (100) apart, each chunk its own
  DATA frame: a caller's deadline or read timeout fires mid-answer. A drip
  that does not reach its end is a lost answer (``slow_drip``) in the ledger.
* ``CHAOS_API_WEBHOOK_LAG_MS`` (0: off; at most 120000): every webhook
  delivery that becomes due waits this long before its first attempt (a PG
  whose webhook pipeline lags), in per-payment order, each held delivery
  keeping its WEBHOOK_QUEUE_SIZE slot. Not scaled by SIMULATION_TIME_SCALE.
  A timeline phase says it as ``[phases.webhooks] lag_ms = 30000`` (or ``lag``,
  a distribution as latency's); held deliveries keep their due time when the
  phase ends, and later ones are not lagged.
* ``CHAOS_API_GOAWAY_EVERY_MS`` and ``CHAOS_API_RESET_EVERY_MS`` (0: off):
  connection-level faults (``connections``).
* ``CHAOS_TIMELINE``: a timeline TOML file (or a shipped example's name),
  played from the start.
* The seed: ``CHAOS_SEED``, else ``SIMULATION_SEED``.
* ``RECONCILIATION_WORKER_URL`` (unset): where the reservation worker's HTTP
  endpoint is (e.g. ``http://127.0.0.1:8040``); set, ``/reconciliation`` gets
  a ``worker`` section cross-checked against this server's payments
  (``paysim.faults.worker_check``), and the policy is on as with
  CHAOS_API_ENABLED. ``RECONCILIATION_GRACE_MS`` (60000): how long after its
  completion a payment may still be unconfirmed (its event travels through
  EventBridge, SQS and a long poll; real time, not simulated).
  ``RECONCILIATION_WORKER_TIMEOUT_MS`` (2000): the bound on one fetch.

Everything is refused in production (``config._refuse_chaos_in_production``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from paysim.env_reader import ConfigError, EnvReader
from paysim.faults.connections import ConnectionFaults
from paysim.faults.plan import PAYMENT_RPCS, FaultPlan, PlanError


@dataclass(frozen=True)
class WorkerCheckSettings:
    """Where the reservation worker is, for the reconciliation report's cross-check."""

    url: str | None = None  # the worker's HTTP endpoint; None: no worker section
    grace_s: float = 60.0  # a completion younger than this is not yet missing
    timeout_s: float = 2.0  # one fetch of the worker's record, connecting included
    max_bytes: int = 16 * 1024 * 1024  # a larger answer is refused
    interval_s: float = 15.0  # how often the gauges are refreshed
    sample: int = 100  # ids listed per finding
    max_lookups: int = 1000  # store lookups per check (the rest is counted as unchecked)


@dataclass(frozen=True)
class ApiChaosSettings:
    enabled: bool = False
    plan: FaultPlan = field(default_factory=FaultPlan)
    timeline: str | None = None  # a path, or the name of a shipped example
    seed: int | None = None
    connections: ConnectionFaults = field(default_factory=ConnectionFaults)
    worker: WorkerCheckSettings = field(default_factory=WorkerCheckSettings)

    @property
    def active(self) -> bool:
        return (
            self.enabled
            or self.worker.url is not None
            or not self.plan.empty
            or self.timeline is not None
            or not self.connections.empty
        )


def read_api_chaos(r: EnvReader, seed: int | None) -> ApiChaosSettings:
    rule: dict[str, Any] = {}
    latency = r.optional_string("CHAOS_API_LATENCY")
    if latency is not None:
        rule["latency"] = _latency(latency, r.choice("CHAOS_API_LATENCY_WHEN", _WHEN, "before"))
    error_rate = r.rate("CHAOS_API_ERROR_RATE", 0.0)
    if error_rate > 0:
        rule["error_rate"] = error_rate
        rule["error_codes"] = _codes(r.string("CHAOS_API_ERROR_CODES", "unavailable:1"))
        rule["retry_after_ms"] = r.integer("CHAOS_API_RETRY_AFTER_MS", 1000, 0)
    lost = r.rate("CHAOS_API_LOST_ANSWER_RATE", 0.0)
    if lost > 0:
        rule["lost_answer_rate"] = lost
        rule["lost_answer_mode"] = r.choice("CHAOS_API_LOST_ANSWER_MODE", _MODES, "unavailable")
    drip = r.rate("CHAOS_API_SLOW_DRIP_RATE", 0.0)
    if drip > 0:
        rule["slow_drip_rate"] = drip
        rule["slow_drip_chunk_bytes"] = r.integer("CHAOS_API_SLOW_DRIP_CHUNK_BYTES", 8, 1)
        rule["slow_drip_interval_ms"] = r.integer("CHAOS_API_SLOW_DRIP_INTERVAL_MS", 100, 0)
    rpcs = [n.strip() for n in r.string("CHAOS_API_RPCS", "*").split(",") if n.strip()]
    for name in rpcs:
        if name != "*" and name not in PAYMENT_RPCS:
            raise ConfigError("CHAOS_API_RPCS", f"unknown RPC {name!r}")
    data: dict[str, Any] = {"rpcs": {n: rule for n in rpcs}} if rule else {}
    lag_ms = r.integer("CHAOS_API_WEBHOOK_LAG_MS", 0, 0)
    if lag_ms > 0:
        data["webhooks"] = {"lag_ms": lag_ms}
    try:
        plan = FaultPlan.from_dict(data)
    except PlanError as exc:
        raise ConfigError("CHAOS_API_*", str(exc)) from None
    return ApiChaosSettings(
        enabled=r.boolean("CHAOS_API_ENABLED", False),
        plan=plan,
        timeline=r.optional_string("CHAOS_TIMELINE"),
        seed=seed,
        connections=ConnectionFaults(
            goaway_every_s=r.millis("CHAOS_API_GOAWAY_EVERY_MS", 0.0),
            reset_every_s=r.millis("CHAOS_API_RESET_EVERY_MS", 0.0),
        ),
        worker=WorkerCheckSettings(
            url=r.optional_url("RECONCILIATION_WORKER_URL"),
            grace_s=r.millis("RECONCILIATION_GRACE_MS", WorkerCheckSettings.grace_s),
            timeout_s=r.millis(
                "RECONCILIATION_WORKER_TIMEOUT_MS", WorkerCheckSettings.timeout_s, 1
            ),
        ),
    )


_WHEN = ("before", "after")
_MODES = ("unavailable", "reset")
_SHAPES = {"fixed": ("ms",), "uniform": ("min_ms", "max_ms"), "lognormal": ("p50_ms", "p99_ms")}


def _latency(raw: str, when: str) -> dict[str, Any]:
    kind, *numbers = raw.split(":")
    keys = _SHAPES.get(kind)
    if keys is None or len(numbers) != len(keys):
        raise ConfigError(
            "CHAOS_API_LATENCY", "fixed:MS, uniform:MIN_MS:MAX_MS or lognormal:P50_MS:P99_MS"
        )
    try:
        values = [float(n) for n in numbers]
    except ValueError:
        raise ConfigError("CHAOS_API_LATENCY", "milliseconds must be numbers") from None
    return {"distribution": kind, "when": when, **dict(zip(keys, values, strict=True))}


def _codes(raw: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in raw.split(","):
        code, _, weight = item.strip().partition(":")
        try:
            out[code.strip().lower()] = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError("CHAOS_API_ERROR_CODES", "code:weight, comma-separated") from None
    return out
