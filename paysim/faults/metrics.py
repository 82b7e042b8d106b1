"""The fault metrics, registered on the process's ``Metrics`` registry.

* ``paysim_api_faults_total{kind,rpc,code}``: every injection; kind ``latency``
  (code ``OK``), ``error`` (its code), ``lost_answer`` (the code the caller got,
  or ``RESET``), ``slow_drip`` (code ``OK``: the answer dripped; whether it
  arrived whole is in the ledger), ``webhook_lag`` (rpc ``webhook``, code
  ``OK``: one per lagged delivery), with ``targeted`` appended to the kind when a call's
  ``x-paysim-fault`` header asked for it.
* ``paysim_api_fault_phase{timeline,phase}``: 1 for the phase being played.
* ``paysim_reconciliation_*``: the reconciliation report's counts, read at scrape.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class FaultMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._faults = Counter(
            "paysim_api_faults",
            "API-side faults injected, by kind, RPC and the code the caller got.",
            ("kind", "rpc", "code"),
            registry=registry,
        )
        self._phase = Gauge(
            "paysim_api_fault_phase",
            "1 for the fault timeline phase being played.",
            ("timeline", "phase"),
            registry=registry,
        )
        self._registry = registry
        self._children: dict[tuple[str, str, str], Counter] = {}
        self._current: tuple[str, str] | None = None

    def injected(self, kind: str, rpc: str, code: str) -> None:
        key = (kind, rpc, code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._faults.labels(*key)
        child.inc()

    def phase(self, timeline: str | None, phase: str | None) -> None:
        if self._current is not None:
            self._phase.labels(*self._current).set(0)
        self._current = (timeline, phase) if timeline and phase else None
        if self._current is not None:
            self._phase.labels(*self._current).set(1)

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at scrape time."""
        Gauge(name, doc, registry=self._registry).set_function(read)
