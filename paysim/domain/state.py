"""The payment state machine: every legal status change is in ``TRANSITIONS``.

This table is the only place that says which status may follow which. The
service moves a payment only through ``transition``; an illegal request raises
``IllegalTransition`` and, payments being frozen values, changes nothing.

    PENDING ──> PROCESSING ──> COMPLETED ──> REFUNDED
       │            │      └─> FAILED
       │            ├────────> CANCELLED
       │            └────────> EXPIRED
       └─> COMPLETED | FAILED | CANCELLED | EXPIRED
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from paysim.domain.models import Payment, PaymentStatus
from paysim.errors import IllegalTransition

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
