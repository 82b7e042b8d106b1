"""The simulator: one cancellable timer task per pending payment.

``app.run`` opens the simulator nursery and hands it to ``Simulator``; nothing
else spawns into it. Each pending payment is one child task with its own
``CancelScope`` whose deadline is the moment the simulated PG answers. At the
deadline the task calls ``fire(payment_id)`` (the service resolves the
payment); ``cancel(payment_id)`` cancels the scope, and nothing fires after
that. A cap (MAX_PENDING_PAYMENTS) turns overload into ``Overloaded`` instead of
unbounded memory. Cancelling the simulator nursery (shutdown) ends every timer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
import trio

from paysim.errors import Overloaded

log = structlog.get_logger("paysim.simulator")

Fire = Callable[[str], Awaitable[None]]


class Simulator:
    def __init__(
        self,
        nursery: trio.Nursery,
        max_pending: int,
        on_pending_change: Callable[[int], None] = lambda delta: None,
    ) -> None:
        self._nursery = nursery
        self._max_pending = max_pending
        self._scopes: dict[str, trio.CancelScope] = {}
        self._on_pending_change = on_pending_change

    @property
    def pending(self) -> int:
        return len(self._scopes)

    def check_capacity(self) -> None:
        if len(self._scopes) >= self._max_pending:
            raise Overloaded(f"too many pending payments ({self._max_pending}); retry later")

    def is_scheduled(self, payment_id: str) -> bool:
        return payment_id in self._scopes

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
        scope.deadline = trio.current_time() + delay_s
        self._nursery.start_soon(self._timer, payment_id, scope, fire)

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

    def cancel(self, payment_id: str) -> bool:
        """Cancel the payment's timer; True if one was pending."""
        scope = self._scopes.pop(payment_id, None)
        if scope is None:
            return False
        self._on_pending_change(-1)
        scope.cancel()
        return True

    async def _timer(self, payment_id: str, scope: trio.CancelScope, fire: Fire) -> None:
        with scope:
            await trio.sleep_forever()
        if scope.cancel_called and self._scopes.get(payment_id) is not scope:
            return  # cancelled through cancel(): the payment was resolved elsewhere
        del self._scopes[payment_id]
        self._on_pending_change(-1)
        try:
            await fire(payment_id)
        except Exception:
            log.exception("resolving a payment failed", payment_id=payment_id)
