"""Webhook delivery: at least once, signed, in order per payment, bounded.

Theory of operation
-------------------
``notify(change)`` (the notifier port) queues a delivery for every change of a
payment that has a ``webhook_url``. Deliveries wait in one FIFO per payment;
a payment whose FIFO has work is put on the *ready* channel, and
WEBHOOK_CONCURRENCY workers take payments from it and make one attempt for the
head of that payment's FIFO. Only one delivery per payment is ever in flight,
so a REFUNDED can never overtake its COMPLETED.

A failed attempt never holds a worker: the payment goes back on the ready
channel after its backoff delay, from a small timer task. Policy:

* 2xx: delivered. 410 Gone: stop for good. A destination the SSRF guard
  refuses: stop for good. A URL that can never be sent (``target.Target.parse``
  refuses it: a stored change from an older version that did not check) is
  dead-lettered at once, outcome ``unsendable``, with no retry: parsing is
  deterministic, so every later attempt would fail the same way while holding
  the payment's FIFO and a queue slot. Anything else (non-2xx, 3xx: redirects are not
  followed, timeouts, connection errors): retry, with exponential backoff and
  full jitter from the configured schedule; ``Retry-After`` on 429/503 is
  honoured (capped by the schedule's maximum); after WEBHOOK_MAX_ATTEMPTS the
  delivery is given up, logged and counted.
* Containment: nothing a receiver or a stored URL does escapes the delivery
  task. An unexpected exception in an attempt is that attempt's failure
  (result ``error``, retried like any other, so bounded by
  WEBHOOK_MAX_ATTEMPTS), logged with its type and where it was raised, never
  with a traceback (its frames hold the signed body and headers).
* Every delivery that finishes, whatever the outcome, is reported through
  ``on_done`` so the outbox (and the shared store) forget it.
* Every attempt of one event carries the same ``X-Webhook-Id`` (the event id)
  and its own ``X-Webhook-Timestamp`` and ``X-Webhook-Attempt``.
* The queue is bounded (WEBHOOK_QUEUE_SIZE deliveries in all): when it is full
  ``notify`` waits, so the newest work waits instead of memory growing; the
  ``paysim_webhook_enqueue_waits_total`` counter shows it.
* Requests go to the address the SSRF guard approved (the URL's host is pinned
  to it, with the original ``Host`` header and TLS server name), so DNS cannot
  change between the check and the connection.

Chaos (development and staging only; ``Settings`` refuses it in production)
------------------------------------------------------------------------------
Two things real PGs do now and then, which consumers must survive, and which no
real PG lets a tester ask for. Both default to off.

* **Duplicates** (CHAOS_WEBHOOK_DUPLICATE_RATE): after a delivery succeeded, it
  is sent once more, right away: the same body and ``X-Webhook-Id``, the next
  ``X-Webhook-Attempt`` (as when a PG lost the receiver's 200 and retried).
* **Out of order** (CHAOS_WEBHOOK_REORDER_RATE): a delivery that reaches the
  head of its payment's FIFO is held back. If a later change of the same
  payment is already queued, or arrives within CHAOS_WEBHOOK_REORDER_HOLD_MS
  (times SIMULATION_TIME_SCALE), the later one is delivered first and the held
  one right after it: an older state arrives after a newer one, as when a PG's
  retry of event 1 lands after event 2. If nothing overtakes it, it goes out in
  order, only late. A delivery is considered once, before its first attempt.

Each decision is a pure function of (CHAOS_SEED, default SIMULATION_SEED; the
kind; the change's reservation id, status and amount refunded so far), not a
draw from a shared stream: a rerun with the same seed and the same reservation
ids makes the same decisions whatever the delivery order and timing. Injected
copies hold no queue slot, are not counted as deliveries
(``paysim_webhook_deliveries_total``) nor reported as undelivered at shutdown;
every injection is counted in ``paysim_webhook_chaos_total{kind}`` (kind
``duplicate``, ``hold``: held back, ``reorder``: overtaken).

The httpx client is owned by the caller (the app root) and closed by it.
"""

from __future__ import annotations

import collections
import email.utils
import hashlib
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import httpx
import structlog
import trio
from prometheus_client import Counter, Gauge, Histogram

from paysim.backoff import Schedule
from paysim.config import WebhookSettings
from paysim.delivery import signing, ssrf
from paysim.delivery.journal import Attempt, DeliveryJournal
from paysim.delivery.target import Target, UnsendableUrl
from paysim.domain.events import status_name, webhook_body
from paysim.domain.models import StatusChange
from paysim.observability.metrics import Metrics

log = structlog.get_logger("paysim.webhooks")


SCHEDULES = {
    "default": Schedule(base_s=1.0, factor=2.0, cap_s=300.0),
    "fast": Schedule(base_s=0.05, factor=2.0, cap_s=1.0),
    # Modelled on Toss Payments: 1, 4, 16, 64, 256, 1024, 4096 minutes.
    "toss": Schedule(base_s=60.0, factor=4.0, cap_s=4096 * 60.0),
}


@dataclass
class _Delivery:
    change: StatusChange
    body: bytes
    attempt: int = 0
    delivered: bool = False
    copy: bool = False  # a chaos duplicate: holds no queue slot, is not a delivery of its own
    reorder: str = "undecided"  # chaos: "undecided", "held" (waiting to be overtaken), "done"


class _ChaosDice:
    """Yes/no chaos decisions, reproducible per change (see the module docstring).

    A hash of (seed, kind, reservation id, status, amount refunded) mapped to
    [0, 1) and compared with the rate. Without a seed, a random salt per
    process: decisions then differ from run to run, as draws would.
    """

    def __init__(self, seed: int | None) -> None:
        self._salt = str(seed) if seed is not None else secrets.token_hex(8)

    def roll(self, kind: str, change: StatusChange, rate: float) -> bool:
        if rate <= 0.0:
            return False
        p = change.payment
        key = f"{self._salt}|{kind}|{p.reservation_id}|{p.status.name}|{p.refunded}"
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2.0**64 < rate


class _Instruments:
    def __init__(self, metrics: Metrics) -> None:
        reg = metrics.registry
        self.deliveries = Counter(
            "paysim_webhook_deliveries",
            "Webhook deliveries finished, by outcome"
            " (delivered, gave_up, gone, blocked, unsendable).",
            ["outcome"],
            registry=reg,
        )
        self.attempts = Counter(
            "paysim_webhook_attempts",
            "Webhook attempts, by result"
            " (2xx, 4xx, 5xx, 3xx, timeout, error, blocked, unsendable).",
            ["result"],
            registry=reg,
        )
        self.attempt_seconds = Histogram(
            "paysim_webhook_attempt_seconds",
            "Duration of one webhook attempt.",
            registry=reg,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.lag = Histogram(
            "paysim_webhook_lag_seconds",
            "From the status change to its successful delivery.",
            registry=reg,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600),
        )
        self.queued = Gauge(
            "paysim_webhook_queue_depth", "Deliveries waiting or in flight.", registry=reg
        )
        self.enqueue_waits = Counter(
            "paysim_webhook_enqueue_waits",
            "Times a status change waited because the webhook queue was full.",
            registry=reg,
        )
        chaos = Counter(
            "paysim_webhook_chaos",
            "Chaos injected into webhook delivery, by kind (duplicate, hold, reorder).",
            ["kind"],
            registry=reg,
        )
        self.chaos = {kind: chaos.labels(kind) for kind in _CHAOS_KINDS}
        self._by_outcome = {o: self.deliveries.labels(o) for o in _OUTCOMES}
        self._by_result: dict[str, Counter] = {}

    def delivered(self, outcome: str) -> None:
        self._by_outcome[outcome].inc()

    def attempted(self, result: str, seconds: float) -> None:
        child = self._by_result.get(result)
        if child is None:
            child = self._by_result[result] = self.attempts.labels(result)
        child.inc()
        self.attempt_seconds.observe(seconds)


_OUTCOMES = ("delivered", "gave_up", "gone", "blocked", "unsendable")
_CHAOS_KINDS = ("duplicate", "hold", "reorder")


class WebhookDispatcher:
    def __init__(
        self,
        settings: WebhookSettings,
        client: httpx.AsyncClient,
        metrics: Metrics,
        *,
        journal: DeliveryJournal | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        time_scale: float = 1.0,
        on_done: Callable[[str], None] = lambda event_id: None,
    ) -> None:
        """``time_scale`` multiplies every retry delay (SIMULATION_TIME_SCALE).

        ``on_done(event_id)`` is called once per change when this dispatcher is
        finished with it: delivered, given up, gone, refused, or nothing to send
        (no webhook URL). Not for what is still queued when it stops.
        """
        self._on_done = on_done
        self._settings = settings
        self._time_scale = time_scale
        self._client = client
        self._schedule = SCHEDULES[settings.retry_schedule]
        self._policy = ssrf.SsrfPolicy.from_settings(settings)
        self._rng = rng if rng is not None else random.Random()
        self._now = wall_clock
        self.journal = journal if journal is not None else DeliveryJournal()
        self._m = _Instruments(metrics)
        self._slots = trio.Semaphore(settings.queue_size)
        self._fifos: dict[str, collections.deque[_Delivery]] = {}
        self._ready_send, self._ready_recv = trio.open_memory_channel[str](float("inf"))
        self._nursery: trio.Nursery | None = None
        self._idle = trio.Event()
        self._idle.set()
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._targets: dict[str, Target] = {}
        self._dice = _ChaosDice(settings.chaos_seed)
        if settings.chaos_enabled:
            log.warning(
                "webhook chaos is on: duplicates and out-of-order deliveries are injected",
                duplicate_rate=settings.chaos_duplicate_rate,
                reorder_rate=settings.chaos_reorder_rate,
                reorder_hold_s=settings.chaos_reorder_hold_s,
            )

    # -- the notifier port ---------------------------------------------------
    def announces(self, change: StatusChange) -> bool:
        return bool(change.payment.webhook_url)

    async def notify(self, change: StatusChange) -> None:
        if not change.payment.webhook_url:
            self._on_done(change.event_id)
            return
        if self._slots.value == 0:
            self._m.enqueue_waits.inc()
        await self._slots.acquire()
        self._m.queued.inc()
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        payment_id = change.payment.payment_intent_id
        fifo = self._fifos.get(payment_id)
        delivery = _Delivery(change, webhook_body(change))
        if fifo is None:
            self._fifos[payment_id] = collections.deque([delivery])
            self._ready_send.send_nowait(payment_id)
        else:
            fifo.append(delivery)  # behind the one in flight or waiting to retry

    async def wait_idle(self) -> None:
        """Block until every queued delivery has finished (delivered or given up)."""
        await self._idle.wait()

    def pending_payment_ids(self) -> list[str]:
        """One payment id per delivery not finished yet: queued, in flight or waiting to retry.

        For the shutdown report (what the grace could not deliver). Changes
        still waiting in ``notify`` for room in a full queue are not here: their
        payments are still being resolved, and the simulator reports those.
        """
        return [payment_id for payment_id, fifo in self._fifos.items() for d in fifo if not d.copy]

    # -- workers ---------------------------------------------------------------
    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(self._settings.concurrency):
                nursery.start_soon(self._worker)
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _worker(self) -> None:
        async for payment_id in self._ready_recv:
            fifo = self._fifos[payment_id]
            if self._hold_back(payment_id, fifo):
                continue
            delivery = fifo[0]
            delivery.attempt += 1
            retry_in = await self._attempt(payment_id, delivery)
            if retry_in is not None:
                assert self._nursery is not None
                self._nursery.start_soon(self._requeue_after, payment_id, retry_in)
                continue
            fifo.popleft()
            if not delivery.copy:
                self._slots.release()
                self._on_done(delivery.change.event_id)
            self._m.queued.dec()
            self._duplicate(fifo, delivery)
            if fifo:
                self._ready_send.send_nowait(payment_id)
            else:
                del self._fifos[payment_id]
                if not self._fifos:
                    self._idle.set()

    async def _requeue_after(self, payment_id: str, delay: float) -> None:
        await trio.sleep(delay)
        self._ready_send.send_nowait(payment_id)

    # -- chaos (see the module docstring) ------------------------------------------
    def _hold_back(self, payment_id: str, fifo: collections.deque[_Delivery]) -> bool:
        """Chaos: let a later change overtake the head. True when the head is held now."""
        head = fifo[0]
        if head.reorder == "undecided":
            head.reorder = "done"
            rate = self._settings.chaos_reorder_rate
            if head.attempt or head.copy or not self._dice.roll("reorder", head.change, rate):
                return False
            if len(fifo) < 2:
                head.reorder = "held"
                self._m.chaos["hold"].inc()
                assert self._nursery is not None
                hold_s = self._settings.chaos_reorder_hold_s * self._time_scale
                self._nursery.start_soon(self._requeue_after, payment_id, hold_s)
                return True
        elif head.reorder == "held":
            head.reorder = "done"
            if len(fifo) < 2:
                return False  # nothing overtook it: it goes out late, in order
        else:
            return False
        fifo.popleft()
        fifo.insert(1, head)
        fifo[0].reorder = "done"
        self._m.chaos["reorder"].inc()
        return False

    def _duplicate(self, fifo: collections.deque[_Delivery], sent: _Delivery) -> None:
        """Chaos: send a delivered webhook once more, next, with the same id and body."""
        rate = self._settings.chaos_duplicate_rate
        if not sent.delivered or sent.copy or not self._dice.roll("duplicate", sent.change, rate):
            return
        copy = _Delivery(sent.change, sent.body, attempt=sent.attempt, copy=True, reorder="done")
        fifo.appendleft(copy)
        self._m.queued.inc()
        self._m.chaos["duplicate"].inc()

    # -- one attempt -------------------------------------------------------------
    async def _attempt(self, payment_id: str, d: _Delivery) -> float | None:
        """Make one attempt; return the delay before the next one, or None when done."""
        change = d.change
        started = trio.current_time()
        http_status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        redacted = "(unsendable URL)"
        try:
            target = self._target(change.payment.webhook_url)
            redacted = target.redacted
            pinned = await self._pinned(target)
            headers = signing.build_headers(
                secrets=self._settings.secrets,
                style=self._settings.signature_style,
                webhook_id=change.event_id,
                timestamp=int(self._now()),
                attempt=d.attempt,
                body=d.body,
            )
            headers.append(("Host", target.host_header))
            response = await self._client.post(
                pinned,
                content=d.body,
                headers=headers,
                timeout=self._settings.timeout_s,
                follow_redirects=False,
                extensions=target.extensions,
            )
            http_status = response.status_code
            if http_status in (429, 503):
                retry_after = _retry_after(response.headers.get("retry-after"), self._now())
            result = f"{http_status // 100}xx"
        except UnsendableUrl as exc:
            error, result = f"unsendable: {exc}", "unsendable"
        except ssrf.BlockedDestination as exc:
            error, result = f"blocked: {exc}", "blocked"
        except httpx.TimeoutException:
            error, result = "timeout", "timeout"
        except (httpx.HTTPError, OSError) as exc:
            error, result = _describe(exc), "error"
        except Exception as exc:  # containment: see the module docstring
            error, result = f"unexpected {type(exc).__name__}", "error"
            # No traceback on purpose (its frames hold the signed body): TRY400 does not apply.
            log.error(  # noqa: TRY400
                "webhook attempt failed unexpectedly",
                payment_id=payment_id,
                event_id=change.event_id,
                error=type(exc).__name__,
                where=_where(exc),
            )
        elapsed = trio.current_time() - started
        self._m.attempted(result, elapsed)

        if http_status is not None and 200 <= http_status < 300:
            outcome, retry_in = "delivered", None
            d.delivered = True
            if not d.copy:
                self._m.lag.observe(max(0.0, self._now() - change.at))
        elif http_status == 410:
            outcome, retry_in = "gone", None
        elif result in ("blocked", "unsendable"):
            outcome, retry_in = result, None
        elif d.attempt >= self._settings.max_attempts:
            outcome, retry_in = "gave_up", None
        else:
            outcome = "retry"
            retry_in = self._schedule.delay(d.attempt, self._rng)
            if retry_after is not None:
                retry_in = min(max(retry_in, retry_after), self._schedule.cap_s)
            retry_in *= self._time_scale
        self.journal.record(
            payment_id,
            Attempt(
                event_id=change.event_id,
                status=status_name(change.payment.status),
                attempt=d.attempt,
                at=self._now(),
                url=redacted,
                outcome=outcome,
                http_status=http_status,
                error=error,
                latency_ms=round(elapsed * 1000, 3),
            ),
        )
        if retry_in is None and not d.copy:
            self._m.delivered(outcome)
            if outcome != "delivered":
                log.warning(
                    "webhook not delivered",
                    payment_id=payment_id,
                    event_id=change.event_id,
                    outcome=outcome,
                    attempts=d.attempt,
                    http_status=http_status,
                    error=error,
                )
        return retry_in

    def _target(self, webhook_url: str) -> Target:
        """What a URL means for a delivery, parsed once per URL (httpx's parsing is costly).

        Raises ``UnsendableUrl`` for a URL nothing can send.
        """
        target = self._targets.get(webhook_url)
        if target is None:
            if len(self._targets) >= _MAX_CACHED:
                self._targets.clear()
            target = self._targets[webhook_url] = Target.parse(webhook_url)
        return target

    async def _pinned(self, target: Target) -> httpx.URL:
        """The URL with its host replaced by an address the SSRF guard approved."""
        url = target.url
        key = (target.host, target.port)
        now = trio.current_time()
        cached = self._dns.get(key)
        if cached is not None and cached[0] > now:
            addresses = cached[1]
        else:
            addresses = await ssrf.resolve(self._policy, target.host, target.port)
            if len(self._dns) >= _MAX_CACHED:
                self._dns.clear()
            self._dns[key] = (now + 30.0, addresses)
        pinned = target.pinned.get(addresses[0])
        if pinned is None:
            if len(target.pinned) >= 16:
                target.pinned.clear()
            pinned = target.pinned[addresses[0]] = url.copy_with(host=addresses[0])
        return pinned


_MAX_CACHED = 10_000


def _describe(exc: BaseException) -> str:
    """An error kind a person can act on, without reprs or addresses."""
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol error from the receiver"
    if isinstance(exc, OSError):
        return "address resolution or connection failed"
    return type(exc).__name__


def _where(exc: BaseException) -> str:
    """``file.py:line`` where ``exc`` was raised: enough to find a bug, no frame contents."""
    tb = exc.__traceback__
    if tb is None:
        return "unknown"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
