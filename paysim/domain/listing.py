"""ListPayments: filters, newest-first order, opaque cursors, page numbers. Pure.

Order: newest first by ``(created_at, payment_intent_id)``, a key no two
payments share, so the order is total and stable.

Cursors are opaque to callers (base64url of ``v1|n|<created_at ns>|<id>``) and
name a position, not an offset: ``n`` (next) means "older than this payment",
``p`` (previous) "newer than this payment". A page therefore stays correct
while new payments arrive (they are newer than every cursor; they show up
only when the caller goes back to the first page) and while old ones are
dropped by retention. Without a cursor, ``pagination.page`` (1-based) picks a
page by offset, for callers that want page numbers.

The store hands over one user's payments in ascending key order (its per-user
index), so the cost is the user's own payments, never everyone's.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from paysim.domain.models import Payment, PaymentStatus
from paysim.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_PAGE = 1_000_000
_CURSOR_FIELD = "pagination.cursor"

Key = tuple[int, str]


def sort_key(payment: Payment) -> Key:
    return (round(payment.created_at * 1e9), payment.payment_intent_id)


@dataclass(frozen=True, slots=True)
class Cursor:
    direction: str  # "n": older than key; "p": newer than key
    key: Key


@dataclass(frozen=True, slots=True)
class ListQuery:
    user_id: str
    status: PaymentStatus = PaymentStatus.UNSPECIFIED  # UNSPECIFIED: any
    reservation_id: str = ""
    page_size: int = DEFAULT_PAGE_SIZE
    page: int = 1
    cursor: Cursor | None = None

    def matches(self, payment: Payment) -> bool:
        return (self.status is PaymentStatus.UNSPECIFIED or payment.status is self.status) and (
            not self.reservation_id or payment.reservation_id == self.reservation_id
        )


@dataclass(frozen=True, slots=True)
class Page:
    payments: list[Payment]  # newest first
    total_count: int
    has_next_page: bool
    has_previous_page: bool
    next_cursor: str
    previous_cursor: str


def encode_cursor(cursor: Cursor) -> str:
    raw = f"v1|{cursor.direction}|{cursor.key[0]}|{cursor.key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """The cursor in ``text``; ``InvalidArgument`` for anything this module did not make."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(_CURSOR_FIELD, "is not a cursor this service issued") from None
    parts = raw.split("|")
    if (
        len(parts) != 4
        or parts[0] != "v1"
        or parts[1] not in ("n", "p")
        or not parts[2].isdigit()
        or not parts[3]
    ):
        raise InvalidArgument(_CURSOR_FIELD, "is not a cursor this service issued")
    return Cursor(parts[1], (int(parts[2]), parts[3]))


def paginate(ascending: Sequence[Payment], query: ListQuery) -> Page:
    """One page of ``ascending`` (one user's payments, ascending key) for ``query``."""
    items = [p for p in ascending if query.matches(p)]
    keys = [sort_key(p) for p in items]
    total = len(items)
    size = query.page_size
    cursor = query.cursor
    if cursor is None:
        # Newest first: page 1 is the last ``size`` items of the ascending list.
        end = max(0, total - (query.page - 1) * size)
        start = max(0, end - size)
    elif cursor.direction == "n":  # older than the cursor's payment
        end = bisect.bisect_left(keys, cursor.key)
        start = max(0, end - size)
    else:  # newer than the cursor's payment, the ones right above it
        start = bisect.bisect_right(keys, cursor.key)
        end = min(total, start + size)
    chosen = items[start:end]
    chosen.reverse()
    has_next = start > 0
    has_previous = end < total
    return Page(
        payments=chosen,
        total_count=total,
        has_next_page=has_next,
        has_previous_page=has_previous,
        next_cursor=encode_cursor(Cursor("n", keys[start])) if has_next and chosen else "",
        previous_cursor=(
            encode_cursor(Cursor("p", keys[end - 1])) if has_previous and chosen else ""
        ),
    )
