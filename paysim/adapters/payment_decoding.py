"""Reading the store's bytes back: the decoding half of ``payment_codec``.

The format, its version rule and the error policy are described in
``payment_codec``, which is the module to import; this one holds the format
version, ``CodecError`` and the decoders, so that the encoders can share them
without an import cycle.
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

FORMAT_VERSION = 1


class CodecError(ValueError):
    """Bytes that are not a value of a known format version (or a value JSON cannot hold)."""


_STATUSES: dict[int, PaymentStatus] = {m.value: m for m in PaymentStatus}
_METHODS: dict[int, PaymentMethod] = {m.value: m for m in PaymentMethod}
_SCENARIOS: dict[int, Scenario] = {m.value: m for m in Scenario}

_PAYMENT_FIELDS = 23
_CHANGE_FIELDS = 6
_RECORD_FIELDS = 3


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
