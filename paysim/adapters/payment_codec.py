"""Bytes for the store: a compact, exact, versioned JSON codec of the domain values.

The Redis store (a ``PaymentStore``, see ``paysim.ports``) keeps each
``Payment``, each queued ``StatusChange`` and each ``IdempotencyRecord`` as one
value of bytes; this module turns those frozen dataclasses into bytes and
back. It does no I/O and knows nothing of Redis.

Format
------
Compact JSON (written and read by orjson: no spaces, no NaN or
Infinity) in UTF-8, non-ASCII text written as is. Every value is a
positional array (no keys, for size and speed) whose first element is the
format version, currently ``1``; the fields follow in declaration order.
Nested values are arrays too, without a version of their own::

    payment   [1, <payment body>]       (the version, then the body's 23 fields)
    change    [1, event_id, [<payment body>], previous, at, refund|null, resend]
    record    [1, fingerprint, payment_intent_id, cancel|null]

    payment body  payment_intent_id, reservation_id, user_id, money, method,
                  scenario, webhook_url, metadata, client_secret, outcome,
                  status, created_at, updated_at, expires_at, version,
                  payment_id, transaction_id, processed_at|null, result|null,
                  refunded, [refund, ...], cancelled_at|null,
                  cancellation_reason
    money         [amount, currency]
    metadata      [source, user_agent, ip_address, session_id, scenario,
                   {tag: value, ...}]
    outcome       [status, delay_s, failure_reason, gateway_response,
                   response_code]
    result        [success, failure_reason, gateway_response, response_code,
                   processed_at]
    refund        [refund_id, money, reason, at]
    cancel        [status, cancelled_at, money|null, refund_id]

Enums (``PaymentStatus``, ``PaymentMethod``, ``Scenario``) are stored as their
numbers. Floats are written in their shortest round-trip form (orjson, like
``repr``), so they read back bit for bit; an int in a float field stays an int.
orjson (a C library) encodes a payment about seven times faster than the
standard library, which made encoding the largest part of a store write.
Empty tags read back as ``EMPTY_TAGS``, others as a ``MappingProxyType`` of a
fresh dict.

Version rule: any change to the layout above (a field added, removed,
reordered or re-typed) takes a new version number. A decoder reads only the
versions it knows and raises ``CodecError`` for any other, so a store never
misreads bytes written by a newer (or older, dropped) format; to migrate, a
decoder learns the old version alongside the new one.

Every ``decode_*`` validates shape, types and enum numbers and raises
``CodecError`` (a ``ValueError``) for anything malformed; the message names
what was wrong, never the data, and no underlying exception is chained.
The ``encode_*`` functions raise ``CodecError`` for a value the format cannot
hold exactly: a non-finite float, or a string with an unpaired surrogate (not
text, so not UTF-8; escaped, two of them would read back as one character).
Strings from the gRPC edge are valid UTF-8 and never have one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

import orjson

from paysim.domain.models import (
    EMPTY_TAGS,
    CancelResult,
    Metadata,
    Money,
    Outcome,
    Payment,
    PaymentMethod,
    PaymentResult,
    PaymentStatus,
    Refund,
    Scenario,
    StatusChange,
)
from paysim.ports import IdempotencyRecord

__all__ = [
    "FORMAT_VERSION",
    "CodecError",
    "decode_change",
    "decode_payment",
    "decode_record",
    "encode_change",
    "encode_payment",
    "encode_record",
]

FORMAT_VERSION = 1


class CodecError(ValueError):
    """Bytes that are not a value of a known format version (or a value JSON cannot hold)."""


_STATUSES: dict[int, PaymentStatus] = {m.value: m for m in PaymentStatus}
_METHODS: dict[int, PaymentMethod] = {m.value: m for m in PaymentMethod}
_SCENARIOS: dict[int, Scenario] = {m.value: m for m in Scenario}

_PAYMENT_FIELDS = 23
_CHANGE_FIELDS = 6
_RECORD_FIELDS = 3


# --- encoding -------------------------------------------------------------------------
#
# Enum members go into the arrays as they are: json writes an int subclass as its number.


def _dump(obj: list[Any]) -> bytes:
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        # An unpaired surrogate (not text), an integer beyond 64 bits, or something
        # JSON has no form for, in a field typed otherwise.
        raise CodecError("value cannot be encoded (not text, too large, or no JSON form)") from None


def _f(x: float | None) -> float | None:
    """A float field, refused if it is not finite (orjson would write null for it)."""
    if type(x) is float and x - x != 0.0:  # inf or nan
        raise CodecError("value cannot be encoded (non-finite float)")
    return x


def _money(m: Money) -> list[Any]:
    return [m.amount, m.currency]


def _refund(r: Refund) -> list[Any]:
    a = r.amount
    return [r.refund_id, [a.amount, a.currency], r.reason, _f(r.at)]


def _payment_body(p: Payment) -> list[Any]:
    m = p.metadata
    o = p.outcome
    r = p.result
    a = p.amount
    return [
        p.payment_intent_id,
        p.reservation_id,
        p.user_id,
        [a.amount, a.currency],
        p.method,
        p.scenario,
        p.webhook_url,
        [m.source, m.user_agent, m.ip_address, m.session_id, m.scenario, dict(m.tags)],
        p.client_secret,
        [o.status, _f(o.delay_s), o.failure_reason, o.gateway_response, o.response_code],
        p.status,
        _f(p.created_at),
        _f(p.updated_at),
        _f(p.expires_at),
        p.version,
        p.payment_id,
        p.transaction_id,
        _f(p.processed_at),
        None
        if r is None
        else [r.success, r.failure_reason, r.gateway_response, r.response_code, _f(r.processed_at)],
        p.refunded,
        [_refund(x) for x in p.refunds],
        _f(p.cancelled_at),
        p.cancellation_reason,
    ]


def encode_payment(p: Payment) -> bytes:
    body = _payment_body(p)
    body.insert(0, FORMAT_VERSION)
    return _dump(body)


def encode_change(c: StatusChange) -> bytes:
    return encode_change_with(c, encode_payment(c.payment))


_PAYMENT_HEAD = b"[%d," % FORMAT_VERSION


def encode_change_with(c: StatusChange, payment: bytes) -> bytes:
    """``encode_change(c)``, reusing ``payment``, the ``encode_payment(c.payment)`` made
    already (a store writes both at once): the same bytes for half the work."""
    head = _dump([FORMAT_VERSION, c.event_id])  # [1,"evt"]
    tail = _dump([c.previous, _f(c.at), None if c.refund is None else _refund(c.refund), c.resend])
    return head[:-1] + b",[" + payment[len(_PAYMENT_HEAD) : -1] + b"]," + tail[1:]


def encode_record(r: IdempotencyRecord) -> bytes:
    c = r.result
    return _dump(
        [
            FORMAT_VERSION,
            r.fingerprint,
            r.payment_intent_id,
            None
            if c is None
            else [
                c.status,
                _f(c.cancelled_at),
                None if c.refunded is None else _money(c.refunded),
                c.refund_id,
            ],
        ]
    )


# --- decoding -------------------------------------------------------------------------
#
# Checks are inline ``type(x) is ...`` tests (this is the store's hot path): a bool
# never passes for an int, nor an int for a bool. A number field takes a float or an
# int (a float field that held an int reads back unchanged). Each failure names the
# field and what it should be, never the value.

_NUMBER = frozenset({float, int})


def _num(v: Any, what: str) -> float:
    """A number field: a float, or an int (a float field that held an int reads back as one)."""
    if type(v) not in _NUMBER:
        _bad(what, _NUM)
    return v  # type: ignore[no-any-return]


_STR = "expected a string"
_INT = "expected an integer"
_NUM = "expected a number"
_ENUM = "expected a known enum number"


def _bad(what: str, expected: str) -> NoReturn:
    raise CodecError(f"malformed value: {what}: {expected}")


def _load(data: bytes, kind: str, fields: int) -> list[Any]:
    if type(data) is not bytes:  # orjson would take a str too
        raise CodecError(f"{kind}: not UTF-8 JSON")
    try:
        value = orjson.loads(data)
    except ValueError:
        # orjson.JSONDecodeError (a ValueError): not UTF-8, not JSON, NaN or Infinity
        # literals (not JSON), nested too deeply.
        raise CodecError(f"{kind}: not UTF-8 JSON") from None
    if type(value) is not list or not value:
        _bad(kind, "expected a versioned array")
    version = value[0]
    if type(version) is not int:
        _bad(kind, "format version is not an integer")
    if version != FORMAT_VERSION:
        raise CodecError(f"{kind}: unknown format version")
    if len(value) != fields + 1:
        _bad(kind, f"expected {fields} fields after the version")
    return value


def _array(v: Any, n: int, what: str) -> list[Any]:
    if type(v) is not list or len(v) != n:
        _bad(what, f"expected an array of {n}")
    return v


def _enum(table: Mapping[int, Any], v: Any, what: str) -> Any:
    member = table.get(v) if type(v) is int else None
    if member is None:
        _bad(what, _ENUM)
    return member


def _dmoney(v: Any, what: str) -> Money:
    amount, currency = _array(v, 2, what)
    if type(amount) is not int:
        _bad(what + ".amount", _INT)
    if type(currency) is not str:
        _bad(what + ".currency", _STR)
    return Money(amount, currency)


def _dmetadata(v: Any) -> Metadata:
    source, user_agent, ip_address, session_id, scenario, tags = _array(v, 6, "metadata")
    if type(source) is not str:
        _bad("metadata.source", _STR)
    if type(user_agent) is not str:
        _bad("metadata.user_agent", _STR)
    if type(ip_address) is not str:
        _bad("metadata.ip_address", _STR)
    if type(session_id) is not str:
        _bad("metadata.session_id", _STR)
    if type(tags) is not dict:
        _bad("metadata.tags", "expected an object")
    if tags:
        for value in tags.values():  # the keys of a JSON object are strings
            if type(value) is not str:
                _bad("metadata.tags", "expected string values")
        tags = MappingProxyType(tags)
    else:
        tags = EMPTY_TAGS
    return Metadata(
        source,
        user_agent,
        ip_address,
        session_id,
        _enum(_SCENARIOS, scenario, "metadata.scenario"),
        tags,
    )


def _doutcome(v: Any) -> Outcome:
    status, delay_s, failure_reason, gateway_response, response_code = _array(v, 5, "outcome")
    delay_s = _num(delay_s, "outcome.delay_s")
    if type(failure_reason) is not str:
        _bad("outcome.failure_reason", _STR)
    if type(gateway_response) is not str:
        _bad("outcome.gateway_response", _STR)
    if type(response_code) is not int:
        _bad("outcome.response_code", _INT)
    return Outcome(
        _enum(_STATUSES, status, "outcome.status"),
        delay_s,
        failure_reason,
        gateway_response,
        response_code,
    )


def _dresult(v: Any) -> PaymentResult:
    success, failure_reason, gateway_response, response_code, processed_at = _array(v, 5, "result")
    if type(success) is not bool:
        _bad("result.success", "expected a boolean")
    if type(failure_reason) is not str:
        _bad("result.failure_reason", _STR)
    if type(gateway_response) is not str:
        _bad("result.gateway_response", _STR)
    if type(response_code) is not int:
        _bad("result.response_code", _INT)
    processed_at = _num(processed_at, "result.processed_at")
    return PaymentResult(success, failure_reason, gateway_response, response_code, processed_at)


def _drefund(v: Any, what: str) -> Refund:
    refund_id, amount, reason, at = _array(v, 4, what)
    if type(refund_id) is not str:
        _bad(what + ".refund_id", _STR)
    if type(reason) is not str:
        _bad(what + ".reason", _STR)
    at = _num(at, what + ".at")
    return Refund(refund_id, _dmoney(amount, what + ".amount"), reason, at)


def _dpayment(f: list[Any]) -> Payment:
    """``f``: the 23 fields of a payment body (the caller checked the count)."""
    (
        payment_intent_id,
        reservation_id,
        user_id,
        amount,
        method,
        scenario,
        webhook_url,
        metadata,
        client_secret,
        outcome,
        status,
        created_at,
        updated_at,
        expires_at,
        version,
        payment_id,
        transaction_id,
        processed_at,
        result,
        refunded,
        refunds,
        cancelled_at,
        cancellation_reason,
    ) = f
    if type(payment_intent_id) is not str:
        _bad("payment_intent_id", _STR)
    if type(reservation_id) is not str:
        _bad("reservation_id", _STR)
    if type(user_id) is not str:
        _bad("user_id", _STR)
    if type(webhook_url) is not str:
        _bad("webhook_url", _STR)
    if type(client_secret) is not str:
        _bad("client_secret", _STR)
    created_at = _num(created_at, "created_at")
    updated_at = _num(updated_at, "updated_at")
    expires_at = _num(expires_at, "expires_at")
    if type(version) is not int:
        _bad("version", _INT)
    if type(payment_id) is not str:
        _bad("payment_id", _STR)
    if type(transaction_id) is not str:
        _bad("transaction_id", _STR)
    if processed_at is not None:
        processed_at = _num(processed_at, "processed_at")
    if type(refunded) is not int:
        _bad("refunded", _INT)
    if type(refunds) is not list:
        _bad("refunds", "expected an array")
    if cancelled_at is not None:
        cancelled_at = _num(cancelled_at, "cancelled_at")
    if type(cancellation_reason) is not str:
        _bad("cancellation_reason", _STR)
    return Payment(
        payment_intent_id,
        reservation_id,
        user_id,
        _dmoney(amount, "amount"),
        _enum(_METHODS, method, "method"),
        _enum(_SCENARIOS, scenario, "scenario"),
        webhook_url,
        _dmetadata(metadata),
        client_secret,
        _doutcome(outcome),
        _enum(_STATUSES, status, "status"),
        created_at,
        updated_at,
        expires_at,
        version,
        payment_id,
        transaction_id,
        processed_at,
        None if result is None else _dresult(result),
        refunded,
        tuple([_drefund(x, f"refunds[{i}]") for i, x in enumerate(refunds)]) if refunds else (),
        cancelled_at,
        cancellation_reason,
    )


def decode_payment(data: bytes) -> Payment:
    value = _load(data, "payment", _PAYMENT_FIELDS)
    return _dpayment(value[1:])


def decode_change(data: bytes) -> StatusChange:
    _, event_id, payment, previous, at, refund, resend = _load(data, "change", _CHANGE_FIELDS)
    if type(event_id) is not str:
        _bad("change.event_id", _STR)
    at = _num(at, "change.at")
    if type(resend) is not bool:
        _bad("change.resend", "expected a boolean")
    return StatusChange(
        event_id,
        _dpayment(_array(payment, _PAYMENT_FIELDS, "change.payment")),
        _enum(_STATUSES, previous, "change.previous"),
        at,
        None if refund is None else _drefund(refund, "change.refund"),
        resend,
    )


def decode_record(data: bytes) -> IdempotencyRecord:
    _, fingerprint, payment_intent_id, result = _load(data, "record", _RECORD_FIELDS)
    if type(fingerprint) is not str:
        _bad("record.fingerprint", _STR)
    if type(payment_intent_id) is not str:
        _bad("record.payment_intent_id", _STR)
    cancel = None
    if result is not None:
        status, cancelled_at, refunded, refund_id = _array(result, 4, "record.result")
        cancelled_at = _num(cancelled_at, "record.result.cancelled_at")
        if type(refund_id) is not str:
            _bad("record.result.refund_id", _STR)
        cancel = CancelResult(
            _enum(_STATUSES, status, "record.result.status"),
            cancelled_at,
            None if refunded is None else _dmoney(refunded, "record.result.refunded"),
            refund_id,
        )
    return IdempotencyRecord(fingerprint, payment_intent_id, cancel)
