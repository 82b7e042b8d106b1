"""The store codec: exact round trips, a pinned format, and CodecError for bad bytes.

"Exact" is checked twice: ``==`` (what the store's callers rely on) and
``repr`` equality, which also tells -0.0 from 0.0, an int from a float and an
enum member from its number. Originals hold their tags in a
``MappingProxyType``, as decoding gives, so that their repr can match; the gRPC
edge builds a plain dict, which ``==`` treats alike (checked below).
"""

from __future__ import annotations

import json
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paysim.adapters.payment_codec import (
    CodecError,
    decode_change,
    decode_payment,
    decode_record,
    encode_change,
    encode_change_with,
    encode_payment,
    encode_record,
)
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

MARKER = "s3cr3t-m4rker"
NUMBER_MARKER = 987_654_321  # a bad number that the error must not repeat either


def full_payment() -> Payment:
    return Payment(
        payment_intent_id=f"pi_{MARKER}",
        reservation_id="res-Ünïcødé-予約",
        user_id="user-😀-42",
        amount=Money(125_000, "KRW"),
        method=PaymentMethod.DIGITAL_WALLET,
        scenario=Scenario.DELAY,
        webhook_url='https://hooks.example.test/päy?x=1&y="q"',
        metadata=Metadata(
            source="mobile-app",
            user_agent="Mozilla/5.0 (X11; Linux) \\ \u2028 \t",
            ip_address="2001:db8::1",
            session_id="sess-\x00-nul",
            scenario=Scenario.RANDOM,
            tags=MappingProxyType({"delay_ms": "1500", "région": "서울", "": "empty key"}),
        ),
        client_secret=f"pi_{MARKER}_secret_\u00e9",
        outcome=Outcome(
            status=PaymentStatus.COMPLETED,
            delay_s=1.5,
            failure_reason="",
            gateway_response="approved",
            response_code=0,
        ),
        status=PaymentStatus.REFUNDED,
        created_at=1764100000.123456,
        updated_at=1764100002.654321,
        expires_at=1764100900.1,
        version=7,
        payment_id="pay_1",
        transaction_id="txn_ß",
        processed_at=1764100001.000001,
        result=PaymentResult(
            success=True,
            failure_reason="",
            gateway_response="approved — ok",
            response_code=200,
            processed_at=1764100001.000001,
        ),
        refunded=125_000,
        refunds=(
            Refund("rf_1", Money(25_000, "KRW"), "부분 환불", 1764100001.5),
            Refund("rf_2", Money(100_000, "KRW"), "rest", 1764100002.654321),
        ),
        cancelled_at=1764100002.654321,
        cancellation_reason="customer asked ✓",
    )


def minimal_payment() -> Payment:
    return Payment(
        payment_intent_id="pi_1",
        reservation_id="r",
        user_id="u",
        amount=Money(1, "USD"),
        method=PaymentMethod.UNSPECIFIED,
        scenario=Scenario.UNSPECIFIED,
        webhook_url="",
        metadata=Metadata(),
        client_secret="",
        outcome=Outcome(status=PaymentStatus.EXPIRED, delay_s=0.0),
        status=PaymentStatus.PENDING,
        created_at=0.0,
        updated_at=0.0,
        expires_at=0.0,
    )


def assert_exact(decoded: object, original: object) -> None:
    assert decoded == original
    assert repr(decoded) == repr(original)


# --- round trips ----------------------------------------------------------------------


def test_full_payment_round_trips_exactly() -> None:
    p = full_payment()
    decoded = decode_payment(encode_payment(p))
    assert_exact(decoded, p)
    assert isinstance(decoded.metadata.tags, MappingProxyType)
    assert dict(decoded.metadata.tags) == dict(p.metadata.tags)
    assert type(decoded.status) is PaymentStatus
    assert type(decoded.method) is PaymentMethod
    assert type(decoded.metadata.scenario) is Scenario
    assert decoded.created_at == 1764100000.123456
    assert decoded.refunds == p.refunds


def test_minimal_payment_round_trips_with_empty_tags() -> None:
    p = minimal_payment()
    decoded = decode_payment(encode_payment(p))
    assert_exact(decoded, p)
    assert decoded.metadata.tags is EMPTY_TAGS
    assert decoded.result is None
    assert decoded.processed_at is None
    assert decoded.cancelled_at is None
    assert decoded.refunds == ()


def test_tags_compare_by_content_so_equality_is_meaningful() -> None:
    # The decoded payment holds a mappingproxy; one built with a plain dict still
    # equals it, and one with other tags does not.
    p = full_payment()
    decoded = decode_payment(encode_payment(p))
    as_dict = replace(p, metadata=replace(p.metadata, tags=dict(p.metadata.tags)))
    assert decoded == as_dict
    other = replace(p, metadata=replace(p.metadata, tags={"delay_ms": "1501"}))
    assert decoded != other


@pytest.mark.parametrize(
    "stamp",
    [1764100000.123456, 0.1 + 0.2, 5e-324, 1.7976931348623157e308, -0.0, 1e16, 1764100000],
    ids=["epoch-us", "0.3-ish", "subnormal", "max", "neg-zero", "1e16", "int"],
)
def test_float_fields_read_back_bit_for_bit(stamp: float) -> None:
    p = replace(
        minimal_payment(),
        created_at=stamp,
        processed_at=stamp,
        outcome=Outcome(PaymentStatus.COMPLETED, stamp),
    )
    decoded = decode_payment(encode_payment(p))
    for value in (decoded.created_at, decoded.processed_at, decoded.outcome.delay_s):
        assert repr(value) == repr(stamp)
        assert type(value) is type(stamp)


def test_change_with_refund_and_resend_round_trips() -> None:
    p = full_payment()
    c = StatusChange(
        event_id="evt_✓",
        payment=p,
        previous=PaymentStatus.COMPLETED,
        at=1764100002.654321,
        refund=p.refunds[-1],
        resend=True,
    )
    assert_exact(decode_change(encode_change(c)), c)


def test_change_without_refund_round_trips() -> None:
    c = StatusChange(
        event_id="evt_1",
        payment=minimal_payment(),
        previous=PaymentStatus.UNSPECIFIED,
        at=1764100000.5,
    )
    decoded = decode_change(encode_change(c))
    assert_exact(decoded, c)
    assert decoded.refund is None
    assert decoded.resend is False


@pytest.mark.parametrize(
    "record",
    [
        IdempotencyRecord("fp", "pi_1"),
        IdempotencyRecord(
            "fp-é",
            "pi_2",
            CancelResult(PaymentStatus.REFUNDED, 1764100002.25, Money(500, "EUR"), "rf_9"),
        ),
        IdempotencyRecord(
            "", "pi_3", CancelResult(PaymentStatus.CANCELLED, 1764100003.125, None, "")
        ),
    ],
    ids=["no-result", "refund", "cancel"],
)
def test_record_round_trips(record: IdempotencyRecord) -> None:
    assert_exact(decode_record(encode_record(record)), record)


# --- the format -----------------------------------------------------------------------


def test_format_is_pinned() -> None:
    # A change here breaks every stored value: it needs a new format version.
    assert encode_payment(minimal_payment()) == (
        b'[1,"pi_1","r","u",[1,"USD"],0,0,"",["","","","",0,{}],"",[7,0.0,"","approved",0],'
        b'1,0.0,0.0,0.0,1,"","",null,null,0,[],null,""]'
    )
    assert (
        encode_record(
            IdempotencyRecord(
                "f", "p", CancelResult(PaymentStatus.REFUNDED, 1.5, Money(2, "EUR"), "x")
            )
        )
        == b'[1,"f","p",[6,1.5,[2,"EUR"],"x"]]'
    )
    change = StatusChange("e", minimal_payment(), PaymentStatus.PROCESSING, 2.5, None, True)
    assert encode_change(change) == (
        b'[1,"e",[' + encode_payment(minimal_payment())[3:-1] + b"],2,2.5,null,true]"
    )


def test_text_is_utf8_as_is() -> None:
    data = encode_payment(full_payment())
    assert "부분 환불".encode() in data
    assert "😀".encode() in data
    # Plain, compact JSON: exactly what json writes with no padding.
    assert data == json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(
    "payment",
    [
        replace(minimal_payment(), created_at=float("nan")),
        replace(minimal_payment(), processed_at=float("inf")),
        replace(minimal_payment(), user_id="half \ud83d pair"),
    ],
    ids=["nan", "inf", "surrogate"],
)
def test_encode_refuses_what_it_cannot_hold_exactly(payment: Payment) -> None:
    with pytest.raises(CodecError):
        encode_payment(payment)


# --- property ---------------------------------------------------------------------------

texts = st.text(max_size=16)
ints = st.integers(min_value=-(2**63), max_value=2**63)
floats: st.SearchStrategy[float] = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**53), max_value=2**53),
)
statuses = st.sampled_from(PaymentStatus)
money = st.builds(Money, amount=ints, currency=texts)
tags = st.dictionaries(texts, texts, max_size=4).map(
    lambda d: MappingProxyType(d) if d else EMPTY_TAGS
)
refunds = st.builds(Refund, refund_id=texts, amount=money, reason=texts, at=floats)
payments = st.builds(
    Payment,
    payment_intent_id=texts,
    reservation_id=texts,
    user_id=texts,
    amount=money,
    method=st.sampled_from(PaymentMethod),
    scenario=st.sampled_from(Scenario),
    webhook_url=texts,
    metadata=st.builds(
        Metadata,
        source=texts,
        user_agent=texts,
        ip_address=texts,
        session_id=texts,
        scenario=st.sampled_from(Scenario),
        tags=tags,
    ),
    client_secret=texts,
    outcome=st.builds(
        Outcome,
        status=statuses,
        delay_s=floats,
        failure_reason=texts,
        gateway_response=texts,
        response_code=ints,
    ),
    status=statuses,
    created_at=floats,
    updated_at=floats,
    expires_at=floats,
    version=ints,
    payment_id=texts,
    transaction_id=texts,
    processed_at=st.none() | floats,
    result=st.none()
    | st.builds(
        PaymentResult,
        success=st.booleans(),
        failure_reason=texts,
        gateway_response=texts,
        response_code=ints,
        processed_at=floats,
    ),
    refunded=ints,
    refunds=st.lists(refunds, max_size=3).map(tuple),
    cancelled_at=st.none() | floats,
    cancellation_reason=texts,
)


@given(payments)
def test_any_payment_round_trips_exactly(p: Payment) -> None:
    assert_exact(decode_payment(encode_payment(p)), p)


changes = st.builds(
    StatusChange,
    event_id=texts,
    payment=payments,
    previous=statuses,
    at=floats,
    refund=st.none() | refunds,
    resend=st.booleans(),
)


@given(changes)
def test_any_change_round_trips_exactly(c: StatusChange) -> None:
    assert_exact(decode_change(encode_change(c)), c)


@given(
    st.builds(
        IdempotencyRecord,
        fingerprint=texts,
        payment_intent_id=texts,
        result=st.none()
        | st.builds(
            CancelResult,
            status=statuses,
            cancelled_at=floats,
            refunded=st.none() | money,
            refund_id=texts,
        ),
    )
)
def test_any_record_round_trips_exactly(r: IdempotencyRecord) -> None:
    assert_exact(decode_record(encode_record(r)), r)


# --- malformed input ------------------------------------------------------------------
#
# Every bad input carries MARKER (the full payment's id holds it), and the error
# must not repeat it. Mutations are made on the JSON of a valid value, and the
# unmutated JSON must decode, so each case fails only for its own mutation.


def mutated(encoded: bytes, path: tuple[int, ...], value: Any) -> bytes:
    doc = json.loads(encoded)
    target = doc
    for i in path[:-1]:
        target = target[i]
    target[path[-1]] = value
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def payment_with(path: tuple[int, ...], value: Any) -> bytes:
    return mutated(encode_payment(full_payment()), path, value)


def payment_json() -> list[Any]:
    doc = json.loads(encode_payment(full_payment()))
    assert isinstance(doc, list)
    return doc


# Positions in a payment array (after the version at 0).
AMOUNT, METHOD, METADATA, OUTCOME, STATUS, CREATED = 4, 5, 8, 10, 11, 12
VERSION, PROCESSED, RESULT, REFUNDED, REFUNDS = 15, 18, 19, 20, 21

BAD_PAYMENTS: dict[str, bytes] = {
    "not-json": f"{MARKER} {{".encode(),
    "not-utf8": b'[1,"\xff' + MARKER.encode() + b'"]',
    "empty": b"",
    "trailing-data": encode_payment(full_payment()) + f' "{MARKER}"'.encode(),
    "object": json.dumps({"v": 1, "id": MARKER}).encode(),
    "string": json.dumps(MARKER).encode(),
    "empty-array": b"[]",
    "nan-literal": payment_with((CREATED,), "@").replace(b'"@"', b"NaN"),
    "infinity-literal": payment_with((CREATED,), "@").replace(b'"@"', b"-Infinity"),
    "version-2": payment_with((0,), 2),
    "version-marker": payment_with((0,), NUMBER_MARKER),
    "version-0": payment_with((0,), 0),
    "version-str": payment_with((0,), "1"),
    "version-float": payment_with((0,), 1.0),
    "version-bool": payment_with((0,), True),
    "too-long": json.dumps([*payment_json(), MARKER]).encode(),
    "too-short": json.dumps(payment_json()[:-1]).encode(),
    "id-int": payment_with((1,), 7),
    "id-null": payment_with((1,), None),
    "amount-not-array": payment_with((AMOUNT,), MARKER),
    "amount-short": payment_with((AMOUNT,), [5]),
    "amount-str": payment_with((AMOUNT, 0), MARKER),
    "amount-float": payment_with((AMOUNT, 0), 5.0),
    "amount-bool": payment_with((AMOUNT, 0), True),
    "currency-int": payment_with((AMOUNT, 1), 410),
    "method-unknown": payment_with((METHOD,), NUMBER_MARKER),
    "method-next": payment_with((METHOD,), 6),
    "method-negative": payment_with((METHOD,), -1),
    "method-float": payment_with((METHOD,), 1.0),
    "method-bool": payment_with((METHOD,), True),
    "method-str": payment_with((METHOD,), "CREDIT_CARD"),
    "method-list": payment_with((METHOD,), [1]),
    "status-unknown": payment_with((STATUS,), NUMBER_MARKER),
    "status-next": payment_with((STATUS,), 8),
    "metadata-short": payment_with((METADATA,), ["", "", "", "", 0]),
    "metadata-scenario": payment_with((METADATA, 4), NUMBER_MARKER),
    "tags-array": payment_with((METADATA, 5), [MARKER]),
    "tags-int-value": payment_with((METADATA, 5), {MARKER: 1}),
    "tags-null-value": payment_with((METADATA, 5), {"k": None}),
    "outcome-status": payment_with((OUTCOME, 0), NUMBER_MARKER),
    "outcome-delay-str": payment_with((OUTCOME, 1), MARKER),
    "created-str": payment_with((CREATED,), MARKER),
    "created-bool": payment_with((CREATED,), True),
    "created-null": payment_with((CREATED,), None),
    "version-field-float": payment_with((VERSION,), 7.0),
    "processed-str": payment_with((PROCESSED,), "1764100001.0"),
    "result-short": payment_with((RESULT,), [True, "", "", 0]),
    "result-success-int": payment_with((RESULT, 0), 1),
    "result-code-float": payment_with((RESULT, 3), 200.0),
    "refunded-null": payment_with((REFUNDED,), None),
    "refunds-object": payment_with((REFUNDS,), {"rf": MARKER}),
    "refunds-empty-object": payment_with((REFUNDS,), {}),
    "refunds-null": payment_with((REFUNDS,), None),
    "refund-short": payment_with((REFUNDS, 0), ["rf_1", [1, "KRW"], MARKER]),
    "refund-money": payment_with((REFUNDS, 1, 1), [MARKER, "KRW"]),
    "refund-at-str": payment_with((REFUNDS, 0, 3), MARKER),
    "deep-nesting": b"[" * 100_000 + MARKER.encode(),
}


def assert_clean_codec_error(excinfo: pytest.ExceptionInfo[CodecError]) -> None:
    message = str(excinfo.value)
    assert message
    assert MARKER not in message
    assert str(NUMBER_MARKER) not in message
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__suppress_context__ or excinfo.value.__context__ is None


def test_mutation_baseline_decodes() -> None:
    assert decode_payment(payment_with((1,), f"pi_{MARKER}")) == full_payment()


@pytest.mark.parametrize("data", BAD_PAYMENTS.values(), ids=BAD_PAYMENTS.keys())
def test_malformed_payment_raises_codec_error(data: bytes) -> None:
    assert MARKER.encode() in data or data in (b"", b"[]")
    with pytest.raises(CodecError) as excinfo:
        decode_payment(data)
    assert_clean_codec_error(excinfo)


def test_str_instead_of_bytes_raises_codec_error() -> None:
    data: Any = encode_payment(full_payment()).decode()
    with pytest.raises(CodecError) as excinfo:
        decode_payment(data)
    assert_clean_codec_error(excinfo)


def full_change() -> StatusChange:
    p = full_payment()
    return StatusChange("evt", p, PaymentStatus.COMPLETED, 1.25, p.refunds[0], True)


def full_record() -> IdempotencyRecord:
    return IdempotencyRecord(
        MARKER, "pi", CancelResult(PaymentStatus.REFUNDED, 1.5, Money(3, "KRW"), "rf")
    )


def test_change_and_record_baselines_decode() -> None:
    assert decode_change(mutated(encode_change(full_change()), (1,), "evt")) == full_change()
    assert decode_record(mutated(encode_record(full_record()), (2,), "pi")) == full_record()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ((0,), 2),
        ((1,), 5),
        ((2,), MARKER),
        ((2, 1), 3),
        ((3,), NUMBER_MARKER),
        ((3,), 8),
        ((4,), MARKER),
        ((5,), [MARKER]),
        ((5, 1), [1, 2]),
        ((6,), 1),
        ((6,), None),
    ],
    ids=[
        "version",
        "event-id",
        "payment-not-array",
        "payment-field",
        "previous",
        "previous-next",
        "at",
        "refund-short",
        "refund-money",
        "resend-int",
        "resend-null",
    ],
)
def test_malformed_change_raises_codec_error(path: tuple[int, ...], value: Any) -> None:
    with pytest.raises(CodecError) as excinfo:
        decode_change(mutated(encode_change(full_change()), path, value))
    assert_clean_codec_error(excinfo)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ((0,), NUMBER_MARKER),
        ((2,), 1),
        ((3,), MARKER),
        ((3,), [6, 1.5, None]),
        ((3, 0), 0.5),
        ((3, 0), NUMBER_MARKER),
        ((3, 1), MARKER),
        ((3, 2), MARKER),
        ((3, 2, 0), "3"),
        ((3, 3), None),
    ],
    ids=[
        "version",
        "pid",
        "result-str",
        "result-short",
        "status-float",
        "status-unknown",
        "cancelled-at",
        "refunded-str",
        "refunded-amount",
        "refund-id",
    ],
)
def test_malformed_record_raises_codec_error(path: tuple[int, ...], value: Any) -> None:
    with pytest.raises(CodecError) as excinfo:
        decode_record(mutated(encode_record(full_record()), path, value))
    assert_clean_codec_error(excinfo)


@pytest.mark.parametrize(
    ("decode", "data"),
    [
        (decode_change, encode_payment(full_payment())),
        (decode_record, encode_payment(full_payment())),
        (decode_payment, encode_change(full_change())),
        (decode_record, encode_change(full_change())),
        (decode_payment, encode_record(full_record())),
        (decode_change, encode_record(full_record())),
    ],
    ids=[
        "payment-as-change",
        "payment-as-record",
        "change-as-payment",
        "change-as-record",
        "record-as-payment",
        "record-as-change",
    ],
)
def test_one_kind_is_not_read_as_another(decode: Any, data: bytes) -> None:
    with pytest.raises(CodecError) as excinfo:
        decode(data)
    assert_clean_codec_error(excinfo)


@given(changes)
def test_a_change_made_from_its_payments_bytes_round_trips(change: StatusChange) -> None:
    # encode_change is built on encode_change_with; the pinned bytes above fix its layout.
    assert_exact(decode_change(encode_change_with(change, encode_payment(change.payment))), change)
