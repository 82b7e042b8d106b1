"""What to inject, per RPC: pure values, parsed once from a dict (JSON, TOML, env).

A ``FaultPlan`` maps an RPC name of ``payment.v1.PaymentService`` (or ``"*"``,
every one of them) to its ``RpcFaults``: a latency distribution (added before
or after the work), an error rate with weighted codes (returned without doing
the work), a lost-answer rate (the work is done, the answer dropped) and a
slow-drip rate (the work is done, the answer sent a few bytes at a time). It
may also lag webhooks (``WebhookFaults``: each delivery that becomes due waits
``lag`` before its first attempt). The same dict shape is the admin endpoint's
JSON, a timeline phase's TOML table and what ``CHAOS_API_*`` build::

    {"rpcs": {"*": {"latency": {"distribution": "lognormal", "p50_ms": 100,
                                "p99_ms": 2000, "when": "before"},
                    "error_rate": 0.05,
                    "error_codes": {"unavailable": 3, "resource_exhausted": 1},
                    "retry_after_ms": 1000,
                    "lost_answer_rate": 0.01, "lost_answer_mode": "unavailable",
                    "slow_drip_rate": 0.01, "slow_drip_chunk_bytes": 8,
                    "slow_drip_interval_ms": 100}},
     "webhooks": {"lag_ms": 30000}}   # or "lag": {"distribution": ..., like latency}

Nothing here does I/O or sleeps: ``policy.py`` draws and acts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PAYMENT_SERVICE = "payment.v1.PaymentService"
PAYMENT_RPCS = (
    "CreatePaymentIntent",
    "ProcessPayment",
    "GetPaymentStatus",
    "CancelPayment",
    "ListPayments",
    "SimulateWebhook",
)
ERROR_CODES = ("unavailable", "deadline_exceeded", "resource_exhausted", "internal")
LOST_MODES = ("unavailable", "reset")
DISTRIBUTIONS = ("fixed", "uniform", "lognormal")
_Z99 = 2.3263478740408408  # the standard normal's 99th percentile
MAX_LATENCY_S = 120.0  # a log-normal tail is cut here
MAX_DRIP_CHUNK = 16384  # the smallest frame size HTTP/2 allows: one DATA frame per chunk


class PlanError(ValueError):
    """A fault plan that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Latency:
    """fixed ``low_s``; uniform ``low_s`` to ``high_s``; lognormal p50 ``low_s``, p99 ``high_s``."""

    distribution: str
    low_s: float
    high_s: float = 0.0
    after: bool = False  # added after the work instead of before it

    def sample(self, rng: random.Random) -> float:
        if self.distribution == "fixed":
            return self.low_s
        if self.distribution == "uniform":
            return rng.uniform(self.low_s, self.high_s)
        mu = math.log(self.low_s)
        sigma = (math.log(self.high_s) - mu) / _Z99
        return min(MAX_LATENCY_S, math.exp(rng.gauss(mu, sigma)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"distribution": self.distribution}
        if self.distribution == "fixed":
            out["ms"] = _ms(self.low_s)
        elif self.distribution == "uniform":
            out.update(min_ms=_ms(self.low_s), max_ms=_ms(self.high_s))
        else:
            out.update(p50_ms=_ms(self.low_s), p99_ms=_ms(self.high_s))
        out["when"] = "after" if self.after else "before"
        return out


@dataclass(frozen=True)
class RpcFaults:
    latency: Latency | None = None
    error_rate: float = 0.0
    error_codes: tuple[tuple[str, float], ...] = (("unavailable", 1.0),)
    retry_after_s: float = 1.0  # sent with RESOURCE_EXHAUSTED
    lost_answer_rate: float = 0.0
    lost_answer_mode: str = "unavailable"  # or "reset": RST_STREAM after the work
    slow_drip_rate: float = 0.0  # the answer's DATA trickles out after the work
    slow_drip_chunk_bytes: int = 8
    slow_drip_interval_s: float = 0.1  # the pause between two chunks

    def pick_code(self, rng: random.Random) -> str:
        if len(self.error_codes) == 1:
            return self.error_codes[0][0]
        total = sum(w for _, w in self.error_codes)
        point = rng.random() * total
        for code, weight in self.error_codes:
            point -= weight
            if point < 0:
                return code
        return self.error_codes[-1][0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency": self.latency.to_dict() if self.latency is not None else None,
            "error_rate": self.error_rate,
            "error_codes": dict(self.error_codes),
            "retry_after_ms": _ms(self.retry_after_s),
            "lost_answer_rate": self.lost_answer_rate,
            "lost_answer_mode": self.lost_answer_mode,
            "slow_drip_rate": self.slow_drip_rate,
            "slow_drip_chunk_bytes": self.slow_drip_chunk_bytes,
            "slow_drip_interval_ms": _ms(self.slow_drip_interval_s),
        }


@dataclass(frozen=True)
class WebhookFaults:
    """Webhook deliveries that become due wait ``lag`` before their first attempt."""

    lag: Latency

    def to_dict(self) -> dict[str, Any]:
        if self.lag.distribution == "fixed":
            return {"lag_ms": _ms(self.lag.low_s)}
        lag = self.lag.to_dict()
        del lag["when"]
        return {"lag": lag}


@dataclass(frozen=True)
class FaultPlan:
    """RPC name (or ``"*"``) -> its faults; an RPC without a rule takes ``"*"``'s."""

    rpcs: Mapping[str, RpcFaults] = field(default_factory=dict)
    webhooks: WebhookFaults | None = None

    def for_rpc(self, rpc: str) -> RpcFaults | None:
        found = self.rpcs.get(rpc)
        return found if found is not None else self.rpcs.get("*")

    @property
    def empty(self) -> bool:
        return not self.rpcs and self.webhooks is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rpcs": {name: rule.to_dict() for name, rule in self.rpcs.items()}}
        if self.webhooks is not None:
            out["webhooks"] = self.webhooks.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any) -> FaultPlan:
        if not isinstance(data, Mapping):
            raise PlanError("a fault plan is an object with an 'rpcs' and/or 'webhooks' object")
        _only(data, {"rpcs", "webhooks"}, "plan")
        rpcs = data.get("rpcs", {})
        if not isinstance(rpcs, Mapping):
            raise PlanError("rpcs: expected an object of RPC name -> faults")
        out: dict[str, RpcFaults] = {}
        for name, rule in rpcs.items():
            if name != "*" and name not in PAYMENT_RPCS:
                raise PlanError(f"rpcs: unknown RPC {name!r}; one of {', '.join(PAYMENT_RPCS)}")
            out[name] = _rpc_faults(rule, f"rpcs.{name}")
        webhooks = data.get("webhooks")
        return cls(out, _webhook_faults(webhooks) if webhooks is not None else None)


def _webhook_faults(data: Any) -> WebhookFaults | None:
    where = "webhooks"
    if not isinstance(data, Mapping):
        raise PlanError(f"{where}: an object with lag_ms, or lag (a distribution as latency's)")
    _only(data, {"lag_ms", "lag"}, where)
    if "lag_ms" in data and "lag" in data:
        raise PlanError(f"{where}: give lag_ms or lag, not both")
    if "lag" in data:
        lag = data["lag"]
        if isinstance(lag, Mapping) and "when" in lag:
            raise PlanError(f"{where}.lag: unknown field 'when' (a lag comes before the first try)")
        lag = _latency(lag, f"{where}.lag")
    else:
        lag = Latency("fixed", _millis(data.get("lag_ms", 0), f"{where}.lag_ms"))
    if lag.distribution == "fixed" and lag.low_s == 0:
        return None
    return WebhookFaults(lag)


def _rpc_faults(data: Any, where: str) -> RpcFaults:
    if not isinstance(data, Mapping):
        raise PlanError(f"{where}: expected an object")
    _only(data, set(RpcFaults().to_dict()), where)
    latency = data.get("latency")
    mode = data.get("lost_answer_mode", "unavailable")
    if mode not in LOST_MODES:
        raise PlanError(f"{where}.lost_answer_mode: one of {', '.join(LOST_MODES)}")
    rule = RpcFaults(
        latency=_latency(latency, f"{where}.latency") if latency is not None else None,
        error_rate=_rate(data.get("error_rate", 0.0), f"{where}.error_rate"),
        error_codes=_codes(data.get("error_codes", {"unavailable": 1}), f"{where}.error_codes"),
        retry_after_s=_millis(data.get("retry_after_ms", 1000), f"{where}.retry_after_ms"),
        lost_answer_rate=_rate(data.get("lost_answer_rate", 0.0), f"{where}.lost_answer_rate"),
        lost_answer_mode=mode,
        slow_drip_rate=_rate(data.get("slow_drip_rate", 0.0), f"{where}.slow_drip_rate"),
        slow_drip_chunk_bytes=_chunk(data.get("slow_drip_chunk_bytes", 8), where),
        slow_drip_interval_s=_millis(
            data.get("slow_drip_interval_ms", 100), f"{where}.slow_drip_interval_ms"
        ),
    )
    if rule.error_rate + rule.lost_answer_rate + rule.slow_drip_rate > 1.0:
        raise PlanError(
            f"{where}: error_rate + lost_answer_rate + slow_drip_rate must not exceed 1"
        )
    return rule


def _chunk(value: Any, where: str) -> int:
    if not _number(value) or value != int(value) or not 1 <= value <= MAX_DRIP_CHUNK:
        raise PlanError(
            f"{where}.slow_drip_chunk_bytes: a whole number of bytes, 1 to {MAX_DRIP_CHUNK}"
        )
    return int(value)


_LATENCY_KEYS = {
    "fixed": ("ms",),
    "uniform": ("min_ms", "max_ms"),
    "lognormal": ("p50_ms", "p99_ms"),
}


def _latency(data: Any, where: str) -> Latency:
    if not isinstance(data, Mapping) or data.get("distribution") not in DISTRIBUTIONS:
        raise PlanError(f"{where}: an object with distribution {', '.join(DISTRIBUTIONS)}")
    kind = data["distribution"]
    keys = _LATENCY_KEYS[kind]
    _only(data, {"distribution", "when", *keys}, where)
    when = data.get("when", "before")
    if when not in ("before", "after"):
        raise PlanError(f"{where}.when: before or after")
    values = [_millis(data.get(k), f"{where}.{k}") for k in keys]
    low, high = values[0], values[-1]
    if kind != "fixed" and not (high >= low and (kind == "uniform" or low > 0)):
        raise PlanError(f"{where}: {keys[1]} must be at least {keys[0]} (and p50 above 0)")
    return Latency(kind, low, high if kind != "fixed" else 0.0, after=when == "after")


def _codes(data: Any, where: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(data, Mapping) or not data:
        raise PlanError(f"{where}: an object of code -> weight, codes {', '.join(ERROR_CODES)}")
    out = []
    for code, weight in data.items():
        if code not in ERROR_CODES:
            raise PlanError(f"{where}: unknown code {code!r}; one of {', '.join(ERROR_CODES)}")
        if not _number(weight) or weight <= 0:
            raise PlanError(f"{where}.{code}: a positive weight")
        out.append((code, float(weight)))
    return tuple(out)


def _rate(value: Any, where: str) -> float:
    if not _number(value) or not 0.0 <= value <= 1.0:
        raise PlanError(f"{where}: a number between 0 and 1")
    return float(value)


def _millis(value: Any, where: str) -> float:
    if not _number(value) or not 0 <= value <= MAX_LATENCY_S * 1000:
        raise PlanError(f"{where}: milliseconds between 0 and {MAX_LATENCY_S * 1000:g}")
    return float(value) / 1000.0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise PlanError(f"{where}: unknown field {unknown[0]!r}")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
