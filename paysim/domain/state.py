"""The payment state machine: the statuses, every legal change, every status rule.

Everything that affects the state machine lives here (as in h11's
``_state.py``): the statuses themselves, the ``TRANSITIONS`` table, the sets
other code asks about (``TERMINAL``, ``SETTLED``, ``AWAITING_PG``,
``CANCELLABLE``, ``REFUNDABLE``) and the per-action checks the use cases run
before they move a payment (``cancel_action``, ``check_refund``,
``check_method``, ``check_simulated_target``). The service moves a payment
only through ``transition``; an illegal request raises ``IllegalTransition``
(or another ``FailedPrecondition``) and, payments being frozen values, changes
nothing. Pure and synchronous: no I/O, no trio.

    PENDING ──> PROCESSING ──> COMPLETED ──> REFUNDED
       │            │      └─> FAILED
       │            ├────────> CANCELLED
       │            └────────> EXPIRED
       └─> COMPLETED | FAILED | CANCELLED | EXPIRED
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING

from paysim.errors import FailedPrecondition, IllegalTransition, InvalidArgument

if TYPE_CHECKING:  # models imports this module for PaymentStatus
    from paysim.domain.models import Money, Payment, PaymentMethod


class PaymentStatus(enum.IntEnum):
    """Numbers mirror ``payment.v1.PaymentStatus`` (the edge converts by number)."""

    UNSPECIFIED = 0
    PENDING = 1
    PROCESSING = 2
    COMPLETED = 3
    FAILED = 4
    CANCELLED = 5
    REFUNDED = 6
    EXPIRED = 7

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_settled(self) -> bool:
        """No outcome is pending: terminal, or COMPLETED (which only a refund changes)."""
        return self in SETTLED


S = PaymentStatus

TRANSITIONS: Mapping[PaymentStatus, frozenset[PaymentStatus]] = {
    S.PENDING: frozenset({S.PROCESSING, S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED}),
    S.PROCESSING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED}),
    S.COMPLETED: frozenset({S.REFUNDED}),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REFUNDED: frozenset(),
    S.EXPIRED: frozenset(),
}

# No transition leaves these.
TERMINAL = frozenset({S.FAILED, S.CANCELLED, S.REFUNDED, S.EXPIRED})
# No outcome is pending: what retention may drop once it is old enough.
SETTLED = TERMINAL | {S.COMPLETED}
# The simulated PG has not answered yet: the payment's timer may still resolve it.
AWAITING_PG = frozenset({S.PENDING, S.PROCESSING})
# Nothing was captured: CancelPayment cancels these.
CANCELLABLE = frozenset({S.PENDING, S.PROCESSING})
# Captured: CancelPayment refunds these (fully or in part).
REFUNDABLE = frozenset({S.COMPLETED})
# ProcessPayment resolves only these; any other status is answered as it is.
PROCESSABLE = frozenset({S.PENDING})

MAX_REFUNDS = 100  # per payment: bounds memory against a caller refunding 1 won at a time


def can_transition(current: PaymentStatus, new: PaymentStatus) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


def update(payment: Payment, at: float, **changes: object) -> Payment:
    """Return ``payment`` with ``changes`` and its status unchanged (a partial refund)."""
    if "status" in changes:
        raise ValueError("a status change goes through transition()")
    return dataclasses.replace(
        payment,
        updated_at=at,
        version=payment.version + 1,
        **changes,  # type: ignore[arg-type]
    )


def transition(payment: Payment, new: PaymentStatus, at: float, **changes: object) -> Payment:
    """Return ``payment`` moved to ``new`` at time ``at`` (with ``changes`` applied).

    Raises ``IllegalTransition`` when the table does not allow it.
    """
    if not can_transition(payment.status, new):
        raise IllegalTransition(payment.status.name, new.name)
    return dataclasses.replace(
        payment,
        status=new,
        updated_at=at,
        version=payment.version + 1,
        **changes,  # type: ignore[arg-type]
    )


# -- per-action checks ------------------------------------------------------------


class CancelAction(enum.Enum):
    CANCEL = "cancel"  # PENDING or PROCESSING → CANCELLED
    REFUND = "refund"  # COMPLETED → REFUNDED (or COMPLETED, for a partial refund)


def cancel_action(status: PaymentStatus, *, refund_requested: bool) -> CancelAction:
    """What CancelPayment does to a payment in ``status``; FailedPrecondition if nothing."""
    if status in CANCELLABLE:
        if refund_requested:
            raise FailedPrecondition(
                f"payment is {status.name}: nothing was captured, so there is "
                "nothing to refund; omit refund_amount to cancel it"
            )
        return CancelAction.CANCEL
    if status in REFUNDABLE:
        return CancelAction.REFUND
    raise FailedPrecondition(
        f"payment is {status.name}; only PENDING or PROCESSING payments can be "
        "cancelled and only COMPLETED ones refunded"
    )


def check_refund(payment: Payment, requested: Money | None) -> int:
    """The amount a refund of ``requested`` (None: all that remains) takes, checked."""
    currency = payment.amount.currency
    if requested is None:
        amount = payment.refundable
    elif requested.currency != currency:
        raise InvalidArgument(
            "refund_amount.currency", f"must be the payment's currency, {currency}"
        )
    elif requested.amount > payment.refundable:
        raise InvalidArgument(
            "refund_amount.amount",
            f"exceeds what remains refundable ({payment.refundable} {currency})",
        )
    else:
        amount = requested.amount
    if len(payment.refunds) >= MAX_REFUNDS:
        raise FailedPrecondition(f"payment already has {MAX_REFUNDS} refunds, the most kept")
    return amount


def check_method(payment: Payment, method: PaymentMethod) -> None:
    """ProcessPayment's method must be the intent's, when both are given."""
    if method and payment.method and method is not payment.method:  # UNSPECIFIED is 0
        raise InvalidArgument(
            "payment_details.method",
            f"does not match the intent's method {payment.method.name}",
        )


def check_simulated_target(current: PaymentStatus, target: PaymentStatus) -> None:
    """SimulateWebhook: a resend (UNSPECIFIED or the current status) or a legal change."""
    if target in (S.UNSPECIFIED, current):
        return
    if not can_transition(current, target):
        raise IllegalTransition(current.name, target.name)
