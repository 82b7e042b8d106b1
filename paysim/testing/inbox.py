"""What one test sees of webhooks: its ``Inbox`` (``sim.webhooks``).

An inbox is the receiver's view for one scope: deliveries to its ``url``
only. ``await inbox.next(payment_id, status=...)`` waits for the next
delivery the inbox *accepted* (answered 2xx) for that payment; ``received``
lists every request, failed attempts included, so a test can count the
retries. ``fail``, ``slow`` and ``go_away`` make the inbox misbehave, for
``for_s`` seconds of trio's clock (virtual under ``autojump_clock``), for
``times`` requests, or until ``recover``.
"""

from __future__ import annotations

import trio

from paysim._proto.proto.payment.v1 import payment_pb2
from paysim.testing.feed import Cursor, NotReceived
from paysim.testing.receiver import Behaviour, Delivery, WebhookReceiver

DEFAULT_TIMEOUT_S = 60.0


class WebhookNotAuthentic(AssertionError):
    """A delivery for the awaited payment failed signature verification."""


def status_name(status: str | int | None) -> str | None:
    if status is None:
        return None
    if isinstance(status, int):
        return payment_pb2.PaymentStatus.Name(status)
    return status if status.startswith("PAYMENT_STATUS_") else f"PAYMENT_STATUS_{status.upper()}"


class Inbox:
    """One scope's webhooks. ``status`` may be an enum number, its name, or ``"completed"``."""

    def __init__(self, receiver: WebhookReceiver, scope: str) -> None:
        self._receiver = receiver
        self.scope = scope
        self._cursor = Cursor(receiver.feed, lambda d: d.scope == scope)

    @property
    def url(self) -> str:
        """The webhook_url to give CreatePaymentIntent for this inbox."""
        return self._receiver.url(self.scope)

    @property
    def received(self) -> list[Delivery]:
        """Every request to this inbox, in arrival order, failed attempts included."""
        return self._cursor.all()

    @property
    def accepted(self) -> list[Delivery]:
        """The deliveries this inbox answered with 2xx."""
        return [d for d in self.received if d.accepted]

    def for_payment(self, payment_id: str) -> list[Delivery]:
        return [d for d in self.received if d.payment_id == payment_id]

    async def next(
        self,
        payment_id: str,
        status: str | int | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Delivery:
        """The next accepted delivery for ``payment_id`` (with ``status``, if given).

        Raises ``NotReceived`` after ``timeout_s`` on trio's clock, and
        ``WebhookNotAuthentic`` if a delivery for the payment did not verify.
        """
        wanted = status_name(status)
        for delivery in self.for_payment(payment_id):
            if delivery.error is not None:
                raise WebhookNotAuthentic(f"webhook for {payment_id}: {delivery.error}")

        def match(d: Delivery) -> bool:
            if d.payment_id != payment_id:
                return False
            if d.error is not None:
                raise WebhookNotAuthentic(f"webhook for {payment_id}: {d.error}")
            return d.accepted and (wanted is None or d.status == wanted)

        what = f"webhook for {payment_id}" + (f" with {wanted}" if wanted else "")
        return await self._cursor.next(match, what, timeout_s)

    # -- misbehaving -----------------------------------------------------------

    def _set(self, behaviour: Behaviour, for_s: float | None) -> None:
        behaviour.until = None if for_s is None else trio.current_time() + for_s
        self._receiver.behaviours[self.scope] = behaviour

    def fail(
        self, status: int = 503, *, times: int | None = None, for_s: float | None = None
    ) -> None:
        """Answer ``status`` to the next ``times`` requests (all, if None) or for ``for_s``."""
        if not 300 <= status <= 599:
            raise ValueError("a failing answer is a status from 300 to 599")
        self._set(Behaviour(fail_status=status, fail_left=times), for_s)

    def slow(self, delay_s: float, *, for_s: float | None = None) -> None:
        """Wait ``delay_s`` (trio's clock) before answering each request."""
        self._set(Behaviour(slow_s=delay_s), for_s)

    def go_away(self, *, for_s: float | None = None) -> None:
        """Close every connection without answering, as a host that is down."""
        self._set(Behaviour(gone=True), for_s)

    def recover(self) -> None:
        """Answer 200 again."""
        self._receiver.behaviours.pop(self.scope, None)


__all__ = ["Delivery", "Inbox", "NotReceived", "WebhookNotAuthentic"]
