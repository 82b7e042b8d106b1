"""Validation of incoming commands. Pure: raises ``InvalidArgument`` naming the field.

Limits are deliberately generous for real ids and tight enough that a hostile
caller cannot make paysim hold megabytes per payment.

Characters: no text field may hold control characters (C0, DEL, C1). Ids
(``check_id``: payment, reservation, user and session ids, idempotency keys)
also refuse every invisible formatting character: Unicode categories Cc and
Cf (which hold all the bidi controls, U+202A-U+202E, U+2066-U+2069, U+200E,
U+200F, U+061C, and zero-width characters) and the line and paragraph
separators (Zl, Zp). An id is compared, logged and shown to people: one that
reads differently from what it is (``user\u202eevil``) is refused, not
cleaned. Free text (reasons, names, user agents) keeps Cf: emoji sequences and
right-to-left names need it.

Currencies are ISO 4217 codes with minor units (``domain.currency``).
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from paysim.domain import currency as currencies
from paysim.domain import forced_outcomes, listing
from paysim.domain.models import (
    CancelCommand,
    CreateIntent,
    Metadata,
    Money,
    PaymentMethod,
    PaymentStatus,
    Scenario,
)
from paysim.errors import InvalidArgument

MAX_ID_LEN = 128
MAX_KEY_LEN = 255
MAX_URL_LEN = 2048
MAX_META_LEN = 512
MAX_TAGS = 50
MAX_TAG_KEY_LEN = 64
MAX_TAG_VALUE_LEN = 512
MAX_AMOUNT = 10**15
MAX_REASON_LEN = 512
DELAY_TAG = "delay_ms"

_CURRENCY = re.compile(r"[A-Z]{3}")
_DIGITS = re.compile(r"[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NOT_IN_IDS = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def check_text(field: str, value: str, limit: int, *, required: bool = False) -> str:
    if not value:  # most optional fields of most requests: nothing more to check
        if required:
            raise InvalidArgument(field, "is required")
        return value
    if len(value) > limit:
        raise InvalidArgument(field, f"is longer than {limit} characters")
    if _CONTROL.search(value):
        raise InvalidArgument(field, "contains control characters")
    return value


def check_id(field: str, value: str, limit: int, *, required: bool = False) -> str:
    """``check_text``, and no invisible formatting character (see the module docstring)."""
    check_text(field, value, limit, required=required)
    # ASCII has no Cf, Zl or Zp, and check_text refused its controls: the common case is free.
    if not value.isascii() and any(unicodedata.category(c) in _NOT_IN_IDS for c in value):
        raise InvalidArgument(
            field,
            "contains an invisible formatting character (bidi control, zero-width"
            " or separator, Unicode categories Cc/Cf/Zl/Zp); send the id as plain text",
        )
    return value


def check_money(field: str, amount: int, currency: str, *, present: bool) -> Money:
    if not present:
        raise InvalidArgument(field, "is required")
    if amount <= 0:
        raise InvalidArgument(f"{field}.amount", "must be a positive integer (smallest unit)")
    if amount > MAX_AMOUNT:
        raise InvalidArgument(f"{field}.amount", f"must not exceed {MAX_AMOUNT}")
    if not _CURRENCY.fullmatch(currency):
        raise InvalidArgument(
            f"{field}.currency", "must be an ISO 4217 code of three upper-case letters"
        )
    if not currencies.is_currency(currency):
        raise InvalidArgument(
            f"{field}.currency",
            f"{currency} is not an ISO 4217 currency of payment (e.g. KRW, USD, EUR)",
        )
    return Money(amount, sys.intern(currency))  # one of a few hundred codes: shared


# Webhook URLs that passed check_webhook_url lately: a load test sends the same
# one with every request, and parsing it costs a few µs each time. Bounded (a
# client sending a new URL each time only refills it); only accepted URLs are
# kept, so every error is found and worded as before.
_ACCEPTED_URLS: dict[str, None] = {}
ACCEPTED_URLS_KEPT = 256


def check_webhook_url(field: str, url: str) -> str:
    if not url or url in _ACCEPTED_URLS:
        return url
    check_text(field, url, MAX_URL_LEN)
    if any(c.isspace() for c in url):
        raise InvalidArgument(field, "must not contain white space")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidArgument(field, "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(field, "must be an absolute http:// or https:// URL")
    if port == 0:
        raise InvalidArgument(field, "has an invalid port")
    if len(_ACCEPTED_URLS) >= ACCEPTED_URLS_KEPT:
        _ACCEPTED_URLS.clear()
    _ACCEPTED_URLS[url] = None
    return url


def check_tags(field: str, tags: Mapping[str, str]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(field, f"has more than {MAX_TAGS} entries")
    for key, value in tags.items():
        check_text(f"{field} key", key, MAX_TAG_KEY_LEN, required=True)
        check_text(f"{field}[{key}]", value, MAX_TAG_VALUE_LEN)
    return dict(tags)


def delay_override_s(tags: Mapping[str, str], max_delay_s: float) -> float | None:
    """The per-request delay from ``tags["delay_ms"]``, in seconds, or None."""
    raw = tags.get(DELAY_TAG)
    if raw is None:
        return None
    field = f"metadata.tags[{DELAY_TAG}]"
    if not _DIGITS.fullmatch(raw):
        raise InvalidArgument(field, "must be a whole number of milliseconds")
    max_ms = round(max_delay_s * 1000)
    if len(raw) > len(str(max_ms)) or int(raw) > max_ms:
        raise InvalidArgument(field, f"must not exceed {int(max_delay_s * 1000)} ms")
    return int(raw) / 1000.0


def forced_outcome(tags: Mapping[str, str]) -> str | None:
    """The outcome ``tags["test_outcome"]`` forces, or None; see ``forced_outcomes``."""
    name = tags.get(forced_outcomes.TAG)
    if name is None:
        return None
    if name not in forced_outcomes.OUTCOMES:
        raise InvalidArgument(
            f"metadata.tags[{forced_outcomes.TAG}]",
            f"must be one of {', '.join(forced_outcomes.OUTCOMES)}",
        )
    return name


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """The fields of a CreatePaymentIntent request as the edge received them, unchecked.

    ``amount_present`` says whether the request carried an amount at all (a
    message field's presence); the enums are already decoded by the edge.
    """

    reservation_id: str
    user_id: str
    amount: int
    currency: str
    amount_present: bool
    method: PaymentMethod
    scenario: Scenario
    webhook_url: str
    idempotency_key: str
    metadata: Metadata


def validate_create(request: CreateRequest, *, max_delay_s: float) -> CreateIntent:
    """Check every field of a CreatePaymentIntent request; build the complete command.

    The tags are parsed here too: ``delay_ms`` (at most ``max_delay_s``) and
    ``test_outcome``. The webhook URL's sendability is the edge's injected check.
    """
    r = request
    check_id("reservation_id", r.reservation_id, MAX_ID_LEN, required=True)
    check_id("user_id", r.user_id, MAX_ID_LEN, required=True)
    money = check_money("amount", r.amount, r.currency, present=r.amount_present)
    check_webhook_url("webhook_url", r.webhook_url)
    check_id("idempotency_key", r.idempotency_key, MAX_KEY_LEN)
    m = r.metadata
    check_text("metadata.source", m.source, MAX_META_LEN)
    check_text("metadata.user_agent", m.user_agent, MAX_META_LEN)
    check_text("metadata.ip_address", m.ip_address, MAX_META_LEN)
    check_id("metadata.session_id", m.session_id, MAX_META_LEN)
    check_tags("metadata.tags", r.metadata.tags)
    delay = delay_override_s(r.metadata.tags, max_delay_s)
    forced = forced_outcome(r.metadata.tags)
    # The strings many payments repeat (a user's id, a shop's webhook URL and its
    # client's user agent, the currency) are shared, not kept once per payment.
    # sys.intern'd strings go when nothing refers to them any more. Metadata is
    # copied only when interning changed one of its strings (not for empty ones).
    source, user_agent = sys.intern(m.source), sys.intern(m.user_agent)
    if source is not m.source or user_agent is not m.user_agent:
        m = replace(m, source=source, user_agent=user_agent)
    return CreateIntent(
        reservation_id=r.reservation_id,
        user_id=sys.intern(r.user_id),
        amount=money,
        method=r.method,
        scenario=r.scenario,
        webhook_url=sys.intern(r.webhook_url),
        idempotency_key=r.idempotency_key,
        metadata=m,
        delay_override_s=delay,
        forced_outcome=forced,
    )


_PHONE = re.compile(r"\+?[0-9]{6,20}")


def _check_digits(field: str, value: str, lengths: range) -> None:
    # The value is never echoed back: card numbers and CVCs are secrets.
    if value and (not _DIGITS.fullmatch(value) or len(value) not in lengths):
        raise InvalidArgument(field, f"must be {lengths.start}-{lengths.stop - 1} digits")


def validate_card(
    *, card_number: str, expiry_month: str, expiry_year: str, cardholder_name: str, cvv: str
) -> None:
    prefix = "payment_details.credit_card"
    _check_digits(f"{prefix}.card_number", card_number.replace(" ", ""), range(12, 20))
    if expiry_month and (not _DIGITS.fullmatch(expiry_month) or not 1 <= int(expiry_month) <= 12):
        raise InvalidArgument(f"{prefix}.expiry_month", "must be a month number 1-12")
    if expiry_year and (not _DIGITS.fullmatch(expiry_year) or len(expiry_year) not in (2, 4)):
        raise InvalidArgument(f"{prefix}.expiry_year", "must be a year of 2 or 4 digits")
    check_text(f"{prefix}.cardholder_name", cardholder_name, MAX_ID_LEN)
    _check_digits(f"{prefix}.cvv", cvv, range(3, 5))


def validate_bank_transfer(*, bank_code: str, account_number: str, account_holder: str) -> None:
    prefix = "payment_details.bank_transfer"
    check_text(f"{prefix}.bank_code", bank_code, 16)
    _check_digits(f"{prefix}.account_number", account_number.replace("-", ""), range(6, 35))
    check_text(f"{prefix}.account_holder", account_holder, MAX_ID_LEN)


def validate_mobile_pay(*, provider: str, mobile_number: str) -> None:
    prefix = "payment_details.mobile_pay"
    check_text(f"{prefix}.provider", provider, 64)
    if mobile_number and not _PHONE.fullmatch(mobile_number.replace("-", "")):
        raise InvalidArgument(f"{prefix}.mobile_number", "must be a phone number")


def validate_cancel(
    *,
    payment_intent_id: str,
    reason: str,
    refund_present: bool,
    refund_amount: int,
    refund_currency: str,
    idempotency_key: str,
) -> CancelCommand:
    check_id("payment_intent_id", payment_intent_id, MAX_ID_LEN, required=True)
    check_text("reason", reason, MAX_REASON_LEN)
    check_id("idempotency_key", idempotency_key, MAX_KEY_LEN)
    refund = (
        check_money("refund_amount", refund_amount, refund_currency, present=True)
        if refund_present
        else None
    )
    return CancelCommand(payment_intent_id, reason, refund, idempotency_key)


def validate_list(
    *,
    user_id: str,
    status: PaymentStatus,
    reservation_id: str,
    page: int,
    page_size: int,
    cursor: str,
) -> listing.ListQuery:
    check_id("user_id", user_id, MAX_ID_LEN, required=True)
    check_id("reservation_id", reservation_id, MAX_ID_LEN)
    if page < 0 or page > listing.MAX_PAGE:
        raise InvalidArgument("pagination.page", f"must be between 1 and {listing.MAX_PAGE}")
    if page_size < 0 or page_size > listing.MAX_PAGE_SIZE:
        raise InvalidArgument(
            "pagination.page_size", f"must be between 1 and {listing.MAX_PAGE_SIZE}"
        )
    check_text("pagination.cursor", cursor, 512)
    return listing.ListQuery(
        user_id=user_id,
        status=status,
        reservation_id=reservation_id,
        page_size=page_size or listing.DEFAULT_PAGE_SIZE,
        page=page or 1,
        cursor=listing.decode_cursor(cursor) if cursor else None,
    )


def check_simulate_delay(delay_seconds: int, max_delay_s: float) -> float:
    if delay_seconds < 0:
        raise InvalidArgument("delay_seconds", "must not be negative")
    if delay_seconds > max_delay_s:
        raise InvalidArgument("delay_seconds", f"must not exceed {int(max_delay_s)} (MAX_DELAY_MS)")
    return float(delay_seconds)
