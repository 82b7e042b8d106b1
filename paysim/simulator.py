"""The simulator: one cancellable timer task per pending payment.

``app.run`` opens the simulator nursery and hands it to ``Simulator``; nothing
else spawns into it. Each pending payment is one child task with its own
``CancelScope`` whose deadline is the moment the simulated PG answers. At the
deadline the task calls ``fire(payment_id)`` (the service resolves the
payment); ``cancel(payment_id)`` cancels the scope, and nothing fires after
that. A cap (MAX_PENDING_PAYMENTS) turns overload into ``Overloaded`` instead of
unbounded memory. Cancelling the simulator nursery (shutdown) ends every timer.

Graceful shutdown (policy "resolve", driven by ``app``): ``resolve_by(cutoff)``
fires at once every timer due after ``cutoff``, also those armed later (calls
still in flight during the drain), while timers due by then keep their time;
``wait_idle()`` returns once no timer is pending and no ``fire`` is running,
and ``pending_ids()`` names what is left if the grace runs out first.

A ``fire`` that meets ``Unavailable`` (the store is unreachable) is tried again
after a backoff (``backoff``), for as long as it takes: the payment was
acknowledged, so its outcome must still be applied once the store is back.
While it waits it counts as scheduled (``is_scheduled``, so a takeover does not
arm a second timer) and as firing (``pending_ids``, ``wait_idle``), and
``cancel`` ends it like any timer. Any other error is logged and ends the timer.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable

import structlog
import trio

from paysim.backoff import Backoff
from paysim.errors import Overloaded, Unavailable

log = structlog.get_logger("paysim.simulator")

Fire = Callable[[str], Awaitable[None]]
MAX_EXTRAS = 16
_TIMER_NAME = "paysim.simulator.timer"  # one shared name: trio formats one per task otherwise


def _abort_always(_: object) -> trio.lowlevel.Abort:
    """Waiting here ends only by cancellation: ``trio.sleep_forever()`` without its own
    coroutine frame and its per-call lambda (about 350 bytes per pending timer)."""
    return trio.lowlevel.Abort.SUCCEEDED


class Simulator:
    def __init__(
        self,
        nursery: trio.Nursery,
        max_pending: int,
        on_pending_change: Callable[[int], None] = lambda delta: None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self._nursery = nursery
        self._max_pending = max_pending
        self._scopes: dict[str, trio.CancelScope] = {}
        self._extras: dict[str, set[trio.CancelScope]] = {}
        self._on_pending_change = on_pending_change
        # Shutdown state: timers due after the cutoff fire at once; the ids whose
        # ``fire`` is running; the event ``wait_idle`` waits on, made on demand.
        self._cutoff = float("inf")
        self._firing: set[str] = set()
        self._idle: trio.Event | None = None
        self._backoff = backoff
        # Fires waiting to be tried again (the store was unavailable), by payment id.
        self._retrying: dict[str, trio.CancelScope] = {}
        # Timers start in an empty context: a copy of the creating request's would
        # keep its log fields alive for as long as the payment is pending.
        self._timer_context = contextvars.Context()

    @property
    def pending(self) -> int:
        return len(self._scopes)

    def check_capacity(self) -> None:
        if len(self._scopes) >= self._max_pending:
            raise Overloaded(f"too many pending payments ({self._max_pending}); retry later")

    def is_scheduled(self, payment_id: str) -> bool:
        """A timer waits, or its ``fire`` runs or waits to be tried again."""
        return payment_id in self._scopes or payment_id in self._firing

    @property
    def retrying(self) -> int:
        """Fires waiting to be tried again after the store was unavailable."""
        return len(self._retrying)

    def reserve(self, payment_id: str) -> None:
        """Take a pending slot for ``payment_id`` now (``Overloaded`` if none is left).

        Reserving before any ``await`` keeps the cap exact when the store is slow;
        ``arm`` then starts the timer, ``cancel`` gives the slot back.
        """
        self.check_capacity()
        if payment_id in self._scopes:
            raise ValueError(f"payment {payment_id} already has a timer")
        self._scopes[payment_id] = trio.CancelScope(deadline=float("inf"))
        self._on_pending_change(1)

    def arm(self, payment_id: str, delay_s: float, fire: Fire) -> None:
        """Start the reserved timer: ``fire(payment_id)`` in ``delay_s`` seconds."""
        scope = self._scopes[payment_id]
        now = trio.current_time()
        due = now + delay_s
        scope.deadline = due if due <= self._cutoff else now  # see resolve_by
        self._timer_context.run(self._start_timer, payment_id, scope, fire)

    def _start_timer(self, payment_id: str, scope: trio.CancelScope, fire: Fire) -> None:
        self._nursery.start_soon(self._timer, payment_id, scope, fire, name=_TIMER_NAME)

    def schedule(self, payment_id: str, delay_s: float, fire: Fire) -> None:
        """``reserve`` and ``arm`` in one step."""
        self.reserve(payment_id)
        self.arm(payment_id, delay_s, fire)

    def expedite(self, horizon_s: float) -> list[str]:
        """Fire now every timer due later than ``horizon_s`` from now (shutdown).

        Timers due within the horizon keep their time. Returns the ids moved.
        """
        now = trio.current_time()
        moved = []
        for payment_id, scope in self._scopes.items():
            if now + horizon_s < scope.deadline < float("inf"):  # inf: reserved, not armed
                scope.deadline = now
                moved.append(payment_id)
        return moved

    def schedule_extra(
        self, payment_id: str, delay_s: float, work: Callable[[], Awaitable[object]]
    ) -> None:
        """Run ``work()`` in ``delay_s`` seconds, as a child of the simulator nursery.

        For scheduled SimulateWebhook calls: at most MAX_EXTRAS per payment
        (``Overloaded`` beyond), all cancelled by ``forget(payment_id)``. They
        do not count as pending payments.
        """
        scopes = self._extras.setdefault(payment_id, set())
        if len(scopes) >= MAX_EXTRAS:
            raise Overloaded(f"payment {payment_id} already has {MAX_EXTRAS} scheduled simulations")
        scope = trio.CancelScope(deadline=trio.current_time() + delay_s)
        scopes.add(scope)
        self._nursery.start_soon(self._extra, payment_id, scope, work)

    def scheduled_extras(self, payment_id: str) -> int:
        return len(self._extras.get(payment_id, ()))

    def forget(self, payment_id: str) -> None:
        """Cancel everything scheduled for the payment: its timer and its extras."""
        self.cancel(payment_id)
        for scope in self._extras.pop(payment_id, ()):
            scope.cancel()

    async def _extra(
        self, payment_id: str, scope: trio.CancelScope, work: Callable[[], Awaitable[object]]
    ) -> None:
        with scope:
            await trio.sleep_forever()
        scopes = self._extras.get(payment_id)
        if scopes is None or scope not in scopes:
            return  # forgotten
        scopes.discard(scope)
        if not scopes:
            del self._extras[payment_id]
        try:
            await work()
        except Exception:
            log.exception("a scheduled simulation failed", payment_id=payment_id)

    def resolve_by(self, cutoff: float) -> list[str]:
        """Shutdown: every timer due after ``cutoff`` (trio time) fires now.

        Unlike ``expedite`` this holds for timers armed from now on too: a
        CreatePaymentIntent still in flight during the drain must not leave a
        timer behind that outlives the grace. Timers due by ``cutoff`` keep their
        time. Returns the ids moved now.
        """
        self._cutoff = min(self._cutoff, cutoff)
        return self.expedite(self._cutoff - trio.current_time())

    def pending_ids(self) -> list[str]:
        """Payments whose outcome is not announced yet: timers waiting, or firing now."""
        return [*self._scopes, *self._firing]

    async def wait_idle(self) -> None:
        """Block until no timer is pending and no ``fire`` is running."""
        while self._scopes or self._firing:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()

    def _check_idle(self) -> None:
        if not self._scopes:
            self._scopes = {}  # a dict keeps its largest table; a storm's should not stay
        if self._idle is not None and not self._scopes and not self._firing:
            self._idle.set()
            self._idle = None

    def cancel_all(self) -> list[str]:
        """Cancel every pending timer, retry and scheduled extra (handover); their ids."""
        ids = [*self._scopes, *self._retrying]
        for payment_id in ids:
            self.cancel(payment_id)
        for payment_id in list(self._extras):
            self.forget(payment_id)
        return ids

    def cancel(self, payment_id: str) -> bool:
        """Cancel the payment's timer (or its fire's retry); True if one was pending."""
        retry = self._retrying.pop(payment_id, None)
        if retry is not None:
            retry.cancel()
            return True
        scope = self._scopes.pop(payment_id, None)
        if scope is None:
            return False
        self._on_pending_change(-1)
        scope.cancel()
        self._check_idle()
        return True

    async def _timer(self, payment_id: str, scope: trio.CancelScope, fire: Fire) -> None:
        # Kept small on purpose: this frame lives as long as the payment is pending.
        with scope:
            await trio.lowlevel.wait_task_rescheduled(_abort_always)
        if scope.cancel_called and self._scopes.get(payment_id) is not scope:
            return  # cancelled through cancel(): the payment was resolved elsewhere
        del self._scopes[payment_id]
        structlog.contextvars.bind_contextvars(payment_id=payment_id)
        self._on_pending_change(-1)
        self._firing.add(payment_id)
        try:
            await self._fire_until_done(payment_id, fire)
        finally:
            self._firing.discard(payment_id)
            self._retrying.pop(payment_id, None)
            self._check_idle()

    async def _fire_until_done(self, payment_id: str, fire: Fire) -> None:
        backoff: Backoff | None = None
        while True:
            try:
                await fire(payment_id)
                return
            except Unavailable:
                if backoff is None:
                    backoff = self._backoff()
                    log.warning(
                        "store unavailable; will resolve the payment later", payment_id=payment_id
                    )
            except Exception:
                log.exception("resolving a payment failed", payment_id=payment_id)
                return
            retry = trio.CancelScope(deadline=trio.current_time() + backoff.failed())
            self._retrying[payment_id] = retry
            with retry:
                await trio.sleep_forever()
            if retry.cancel_called and self._retrying.get(payment_id) is not retry:
                return  # cancelled through cancel(): resolved elsewhere, or handed over
            del self._retrying[payment_id]
