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

from typing import Any

import orjson

from paysim.adapters.payment_decoding import (
    FORMAT_VERSION,
    CodecError,
    decode_change,
    decode_payment,
    decode_record,
)
from paysim.domain.models import Money, Payment, Refund, StatusChange
from paysim.ports import IdempotencyRecord

__all__ = [
    "FORMAT_VERSION",
    "CodecError",
    "decode_change",
    "decode_payment",
    "decode_record",
    "encode_change",
    "encode_change_with",
    "encode_payment",
    "encode_record",
]


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
    # Empty tags and no refunds, the usual case, skip what costs most here for
    # nothing: dict() of a MappingProxyType (about 0.6 us) and a comprehension
    # (a function call of its own). The Redis store encodes twice per payment.
    tags = m.tags
    refunds = p.refunds
    return [
        p.payment_intent_id,
        p.reservation_id,
        p.user_id,
        [a.amount, a.currency],
        p.method,
        p.scenario,
        p.webhook_url,
        [
            m.source,
            m.user_agent,
            m.ip_address,
            m.session_id,
            m.scenario,
            dict(tags) if tags else {},
        ],
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
        [_refund(x) for x in refunds] if refunds else [],
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
