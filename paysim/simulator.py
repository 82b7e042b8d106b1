"""The simulator: one cancellable timer task per pending payment, on one clock.

``app.run`` opens the simulator nursery and hands it to ``Simulator``; nothing
else spawns into it. Each pending payment is one child task of that nursery,
parked until the moment the simulated PG answers (its deadline). The
deadlines are kept by the simulator, not by a ``CancelScope`` per task: one
clock task (running only while timers are armed) sleeps until the earliest
due time in a heap and wakes the timers that are due, which then call
``fire(payment_id)`` (the service resolves the payment); ``cancel(payment_id)``
wakes the timer to end, and nothing fires after that. Why (issue 18): a
``CancelScope`` with a deadline costs about 1 KB per pending payment and, when
it expires, a ``Cancelled`` raised and caught; a heap entry is about 80 bytes
and a wake-up is ``reschedule``. A cancelled or moved timer leaves a stale
heap entry behind, skipped when it comes up and compacted away when stale
entries outnumber live ones. A timer task parks on its own ``_Timer``
(``paysim.parking``: about 540 B less per pending payment than
``wait_task_rescheduled``); after a storm, ``give_back_memory`` (the sweeper)
rebuilds the tables that held it. A cap (MAX_PENDING_PAYMENTS) turns overload into
``Overloaded`` instead of unbounded memory. Cancelling the simulator nursery
(shutdown) ends every timer and the clock.

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
import heapq
from collections.abc import Awaitable, Callable

import outcome
import structlog
import trio

from paysim import sparse_tables
from paysim.backoff import Backoff
from paysim.errors import Overloaded, Unavailable
from paysim.parking import ParkingSpot

log = structlog.get_logger("paysim.simulator")

Fire = Callable[[str], Awaitable[None]]
MAX_EXTRAS = 16
_TIMER_NAME = "paysim.simulator.timer"  # one shared name: trio formats one per task otherwise
_CLOCK_NAME = "paysim.simulator.clock"
_UNARMED = float("inf")  # reserved: no due time yet
_FIRED = float("-inf")  # the clock found it due: it fires when its task runs
_COMPACT_AT = 4096  # stale heap entries tolerated before they may be compacted away
# The clock sleeps at least this long between wakes: timers due within a tick of
# its last wake fire together, at most a tick late. Each wake is a deadline that
# expires (a ``Cancelled`` raised and caught); at 2,000 payments/s, due times
# 0.5 ms apart, the tick halves them. A timer armed due before all the others
# still wakes the clock (``_set_due``), and fires at once if it is due now.
_TICK_S = 0.001


class _Timer(ParkingSpot):
    """One pending payment's timer: its due time and, while parked, its task.

    Its task parks on it (``await timer``, see ``paysim.parking``), and it is
    the parked task's abort function: cancelled by its nursery (shutdown), the
    task ends, and nothing may wake it any more."""

    __slots__ = ("due", "fire", "payment_id", "task")

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id
        self.due = _UNARMED
        self.task: trio.lowlevel.Task | None = None
        self.fire: Fire | None = None

    def __call__(self, _: object) -> trio.lowlevel.Abort:
        self.task = None
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
        self._timers: dict[str, _Timer] = {}
        # The clock: (due, payment id) entries, stale ones included (counted).
        self._heap: list[tuple[float, str]] = []
        self._stale = 0
        self._clock_running = False
        self._next_due = _UNARMED  # what the clock sleeps until
        # The clock parks here; unparked when an earlier due time arrives. One lot for
        # the clock's life, not an Event per wait: a wait allocated three objects, and
        # the last Event lived on, born wherever the storm's allocations were (it kept
        # a memory arena of a swept storm from going back, benchmarks.lifecycle).
        self._wake = trio.lowlevel.ParkingLot()
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
        return len(self._timers)

    def check_capacity(self) -> None:
        if len(self._timers) >= self._max_pending:
            raise Overloaded(f"too many pending payments ({self._max_pending}); retry later")

    def is_scheduled(self, payment_id: str) -> bool:
        """A timer waits, or its ``fire`` runs or waits to be tried again."""
        return payment_id in self._timers or payment_id in self._firing

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
        if payment_id in self._timers:
            raise ValueError(f"payment {payment_id} already has a timer")
        self._timers[payment_id] = _Timer(payment_id)
        self._on_pending_change(1)

    def arm(self, payment_id: str, delay_s: float, fire: Fire) -> None:
        """Start the reserved timer: ``fire(payment_id)`` in ``delay_s`` seconds."""
        timer = self._timers[payment_id]
        now = trio.current_time()
        due = now + delay_s
        self._set_due(payment_id, timer, due if due <= self._cutoff else now)  # see resolve_by
        timer.fire = fire
        self._timer_context.run(self._start_timer, timer)

    def _start_timer(self, timer: _Timer) -> None:
        self._nursery.start_soon(self._timer, timer, name=_TIMER_NAME)
        if not self._clock_running:
            self._clock_running = True
            self._nursery.start_soon(self._clock, name=_CLOCK_NAME)

    def _set_due(self, payment_id: str, timer: _Timer, due: float) -> None:
        if timer.due != _UNARMED:
            self._stale += 1  # its earlier entry stays in the heap until it comes up
        timer.due = due
        heapq.heappush(self._heap, (due, payment_id))
        if due < self._next_due:
            self._wake.unpark_all()

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
        for payment_id, timer in self._timers.items():
            if now + horizon_s < timer.due < _UNARMED:  # not reserved only, not fired
                self._set_due(payment_id, timer, now)
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
        return [*self._timers, *self._firing]

    async def wait_idle(self) -> None:
        """Block until no timer is pending and no ``fire`` is running."""
        while self._timers or self._firing:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()

    def _check_idle(self) -> None:
        if not self._timers:
            # A dict keeps its largest table; a storm's should not stay. Cleared, not
            # replaced: a new dict made now would be born among the storm's payments
            # (still stored) and keep one of their memory arenas once they are swept.
            self._timers.clear()
        if self._idle is not None and not self._timers and not self._firing:
            self._idle.set()
            self._idle = None

    def give_back_memory(self) -> bool:
        """After a storm: rebuild the tables that held it; True if any was.

        The sweeper calls it (never the hot path), and then hands the C
        allocator's free pages back (``runtime.return_free_memory``). The timers'
        dict, the set of firing ids and trio's task sets of the simulator nursery
        keep tables sized for their largest count; those now nearly empty
        (``sparse_tables.is_sparse``) are rebuilt.
        """
        rebuilt = sparse_tables.shrink_trio_task_sets(self._nursery) > 0
        if sparse_tables.is_sparse(self._timers):
            sparse_tables.shrink_dict(self._timers)
            rebuilt = True
        if sparse_tables.is_sparse(self._firing):
            sparse_tables.shrink_set(self._firing)
            rebuilt = True
        return rebuilt

    def cancel_all(self) -> list[str]:
        """Cancel every pending timer, retry and scheduled extra (handover); their ids."""
        ids = [*self._timers, *self._retrying]
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
        timer = self._timers.pop(payment_id, None)
        if timer is None:
            return False
        self._on_pending_change(-1)
        if _FIRED < timer.due < _UNARMED:
            self._stale += 1
            self._compact()
        task, timer.task = timer.task, None
        if task is not None:
            trio.lowlevel.reschedule(task, outcome.Value(False))
        self._check_idle()
        return True

    def _compact(self) -> None:
        """Drop stale heap entries once they outnumber the live ones (a storm cancelled);
        with none live, the clock ends now rather than at the last stale due time."""
        # The heap is changed in place, never replaced (see ``_check_idle``).
        if self._stale >= len(self._heap):
            self._heap.clear()
            self._stale = 0
            self._wake.unpark_all()
            return
        if self._stale < _COMPACT_AT or self._stale * 2 < len(self._heap):
            return
        timers = self._timers
        live = [e for e in self._heap if (t := timers.get(e[1])) is not None and t.due == e[0]]
        heapq.heapify(live)
        self._heap[:] = live
        self._stale = 0

    async def _clock(self) -> None:
        """Wake each timer when it is due; ends when no timer is armed."""
        try:
            while True:
                now = trio.current_time()
                heap = self._heap
                while heap and heap[0][0] <= now:
                    due, payment_id = heapq.heappop(heap)
                    timer = self._timers.get(payment_id)
                    if timer is None or timer.due != due:
                        self._stale -= 1
                        continue
                    timer.due = _FIRED
                    task, timer.task = timer.task, None
                    if task is not None:  # else it has not started yet, and will fire at once
                        trio.lowlevel.reschedule(task, outcome.Value(True))
                if len(heap) <= self._stale:  # nothing live left: stale entries only
                    heap.clear()
                    self._stale = 0
                    return
                self._next_due = heap[0][0]
                with trio.move_on_at(max(self._next_due, now + _TICK_S)):
                    await self._wake.park()
        finally:
            self._clock_running = False
            self._next_due = _UNARMED

    async def _timer(self, timer: _Timer) -> None:
        # Kept small on purpose (two locals, no try): this coroutine and the frame
        # object trio makes of it live as long as the payment is pending.
        if timer.due != _FIRED and (not self._park_here(timer) or not await timer):
            return  # cancelled, before this task first ran or through cancel()
        await self._fired(timer)

    def _park_here(self, timer: _Timer) -> bool:
        """Record the task that is about to park on ``timer``; False if it was cancelled."""
        if self._timers.get(timer.payment_id) is not timer:
            return False  # cancelled before this task first ran
        timer.task = trio.lowlevel.current_task()
        return True

    async def _fired(self, timer: _Timer) -> None:
        # The clock found the timer due (its task was woken with True, or had not parked yet).
        payment_id = timer.payment_id
        if self._timers.get(payment_id) is not timer or timer.fire is None:
            return  # cancelled after the clock found it due
        del self._timers[payment_id]
        structlog.contextvars.bind_contextvars(payment_id=payment_id)
        self._on_pending_change(-1)
        self._firing.add(payment_id)
        try:
            await self._fire_until_done(payment_id, timer.fire)
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
