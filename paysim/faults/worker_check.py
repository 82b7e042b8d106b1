"""The reconciliation report's ``worker`` section: fetch the worker's record, cross-check it.

``WorkerCheck.section()`` fetches ``GET {RECONCILIATION_WORKER_URL}/reconciliation``
(``fetch_worker_report``), looks up in the store the payments the worker
confirmed that the ledger did not see complete, and cross-checks
(``paysim.faults.worker_report``). It never raises for what the worker does:

* connection refused, a reset, a DNS failure: ``{"error": "the worker at … is
  unreachable: …"}``; bytes that are not HTTP: ``"… broke the HTTP exchange: …"``;
* no complete answer within ``timeout_s`` (connecting included; a worker that
  accepts and never answers, or trickles bytes): ``{"error": "… did not answer
  within 2 s"}``;
* a status other than 200, a body over ``max_bytes`` (refused while reading,
  never buffered whole), not JSON, or not the worker's shape: an error naming
  which.

``run`` refreshes the gauges every ``interval_s``:
``paysim_reconciliation_confirmed_not_completed``,
``paysim_reconciliation_completed_not_confirmed`` (-1 while the worker cannot
be read) and the counter ``paysim_reconciliation_worker_errors_total``.

Resource handling: the check does not own its HTTP client (the wiring opens
and closes it). Store lookups are bounded per check (``max_lookups``).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge

from paysim.faults.ledger import Ledger
from paysim.faults.settings import WorkerCheckSettings
from paysim.faults.worker_report import MalformedReport, Truth, cross_check, parse_worker_report
from paysim.ports import PaymentStore
from paysim.url_text import shown_url

log = structlog.get_logger("paysim.reconciliation")


class WorkerUnreadable(Exception):
    """The worker's record could not be read; the message says why, for the report."""


def describe_url(url: str) -> str:
    """``scheme://host[:port]``: the URL as the report shows it (no user info, no path)."""
    return shown_url(url, path=False)


async def fetch_worker_report(
    client: httpx.AsyncClient, url: str, *, timeout_s: float, max_bytes: int
) -> Any:
    """The worker's ``/reconciliation`` answer as parsed JSON; ``WorkerUnreadable`` if none."""
    where = f"the worker at {describe_url(url)}"
    target = url.rstrip("/") + "/reconciliation"
    try:
        with trio.fail_after(timeout_s):  # the whole exchange, whatever httpx's own timeouts
            async with client.stream("GET", target) as response:
                if response.status_code != 200:
                    raise WorkerUnreadable(f"{where} answered HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise WorkerUnreadable(f"{where} sent more than {max_bytes} bytes")
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > max_bytes:
                        raise WorkerUnreadable(f"{where} sent more than {max_bytes} bytes")
    except trio.TooSlowError:
        raise WorkerUnreadable(f"{where} did not answer within {timeout_s:g} s") from None
    except httpx.TimeoutException:
        raise WorkerUnreadable(f"{where} did not answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        reason = str(exc)[:200] or type(exc).__name__
        what = "is unreachable" if isinstance(exc, httpx.TransportError) else "failed"
        if isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
            what = "broke the HTTP exchange"
        raise WorkerUnreadable(f"{where} {what}: {reason}") from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise WorkerUnreadable(f"{where} answered something that is not JSON") from None


class WorkerCheck:
    """The worker section of ``/reconciliation``, and its gauges."""

    def __init__(
        self,
        settings: WorkerCheckSettings,
        ledger: Ledger,
        client: httpx.AsyncClient,
        store: PaymentStore,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        assert settings.url is not None
        self._settings = settings
        self._url: str = settings.url
        self._ledger = ledger
        self._client = client
        self._store = store
        self._sample = settings.sample
        self._max_lookups = settings.max_lookups
        self._now = now
        self._last: dict[str, Any] | None = None
        self._errors: Counter | None = None

    def register(self, registry: CollectorRegistry) -> None:
        """The gauges (read from the last check) and the error counter on ``registry``."""
        for name, key, doc in (
            (
                "paysim_reconciliation_confirmed_not_completed",
                "confirmed_not_completed",
                "Reservations the worker confirmed for payments that did not complete.",
            ),
            (
                "paysim_reconciliation_completed_not_confirmed",
                "completed_not_confirmed",
                "Payments completed longer than the grace ago whose reservation was never "
                "confirmed (-1: the worker could not be read).",
            ),
        ):
            gauge = Gauge(name, doc, registry=registry)
            gauge.set_function(functools.partial(self._count, key))
        self._errors = Counter(
            "paysim_reconciliation_worker_errors",
            "Reads of the worker's record that failed.",
            registry=registry,
        )

    def _count(self, key: str) -> float:
        last = self._last
        if last is None or "error" in last:
            return -1.0
        return float(last[key]["count"])

    async def section(self) -> dict[str, Any]:
        """The worker section: findings, or ``{"error": ...}``; never raises for the worker."""
        head: dict[str, Any] = {
            "url": describe_url(self._url),
            "grace_s": self._settings.grace_s,
        }
        try:
            body = await fetch_worker_report(
                self._client,
                self._url,
                timeout_s=self._settings.timeout_s,
                max_bytes=self._settings.max_bytes,
            )
            facts = parse_worker_report(body)
        except (WorkerUnreadable, MalformedReport) as exc:
            message = str(exc)
            if not isinstance(exc, WorkerUnreadable):
                message = f"the worker's answer is not its record: {message}"
            if self._errors is not None:
                self._errors.inc()
            self._last = {**head, "error": message}
            return self._last
        completed = self._ledger.completed
        statuses: dict[str, str | None] = {}
        wanted = [p for p in facts.confirmed_payment_ids() if p not in completed]
        for pid in wanted[: self._max_lookups]:
            payment = await self._store.get(pid)
            statuses[pid] = payment.status.name if payment is not None else None
        truth = Truth(completed, statuses, max(0, len(wanted) - self._max_lookups))
        findings = cross_check(
            facts, truth, now=self._now(), grace_s=self._settings.grace_s, sample=self._sample
        )
        self._last = {
            **head,
            "reservation_api": facts.reservation_api,
            "reservations_recorded": facts.reservations,
            "worker_evicted": facts.evicted,
            "completions_evicted": self._ledger.completions_evicted,
            **findings,
        }
        return self._last

    async def run(self) -> None:
        """Refresh the gauges every ``interval_s``, until cancelled."""
        interval_s = self._settings.interval_s
        if not math.isfinite(interval_s) or interval_s <= 0:
            return
        while True:
            section = await self.section()
            if "error" in section:
                log.debug("worker record unreadable", error=section["error"])
            await trio.sleep(interval_s)
