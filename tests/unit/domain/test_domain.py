"""The pure domain: the state table, outcomes, validation, ids."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import re
from typing import Any

import pytest

from paysim.domain import forced_outcomes, ids, outcomes, state, validation
from paysim.domain.clock import SimClock
from paysim.domain.models import (
    CreateIntent,
    Metadata,
    Money,
    Outcome,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Scenario,
)
from paysim.errors import FailedPrecondition, IllegalTransition, InvalidArgument

S = PaymentStatus


def make_payment(status: PaymentStatus = S.PENDING, **changes: Any) -> Payment:
    payment = Payment(
        payment_intent_id="pay_1",
        reservation_id="res_1",
        user_id="user_1",
        amount=Money(50_000, "KRW"),
        method=PaymentMethod.CREDIT_CARD,
        scenario=Scenario.APPROVE,
        webhook_url="https://example.com/hook",
        metadata=Metadata(),
        client_secret="pay_1_secret_x",
        outcome=Outcome(status=S.COMPLETED, delay_s=2.0),
        status=status,
        created_at=100.0,
        updated_at=100.0,
        expires_at=1000.0,
    )
    return dataclasses.replace(payment, **changes)


# -- the state table -----------------------------------------------------------

LEGAL = [(a, b) for a, targets in state.TRANSITIONS.items() for b in sorted(targets)]
ILLEGAL = [
    (a, b)
    for a, b in itertools.product(PaymentStatus, PaymentStatus)
    if b not in state.TRANSITIONS.get(a, frozenset())
]


def test_the_table_is_the_documented_machine() -> None:
    assert set(LEGAL) == {
        (S.PENDING, S.PROCESSING),
        (S.PENDING, S.COMPLETED),
        (S.PENDING, S.FAILED),
        (S.PENDING, S.CANCELLED),
        (S.PENDING, S.EXPIRED),
        (S.PROCESSING, S.COMPLETED),
        (S.PROCESSING, S.FAILED),
        (S.PROCESSING, S.CANCELLED),
        (S.PROCESSING, S.EXPIRED),
        (S.COMPLETED, S.REFUNDED),
    }
    assert len(LEGAL) + len(ILLEGAL) == len(PaymentStatus) ** 2


@pytest.mark.parametrize(("current", "new"), LEGAL, ids=[f"{a.name}->{b.name}" for a, b in LEGAL])
def test_legal_transition_moves_bumps_version_and_sets_updated_at(
    current: PaymentStatus, new: PaymentStatus
) -> None:
    before = make_payment(current, version=3)
    after = state.transition(before, new, 123.5, transaction_id="txn_1")
    assert state.can_transition(current, new)
    assert after.status is new
    assert after.version == 4
    assert after.updated_at == 123.5
    assert after.transaction_id == "txn_1"
    assert after.created_at == before.created_at
    # The original is a value: untouched.
    assert before.status is current
    assert before.version == 3
    assert before.updated_at == 100.0
    assert before.transaction_id == ""


@pytest.mark.parametrize(
    ("current", "new"), ILLEGAL, ids=[f"{a.name}->{b.name}" for a, b in ILLEGAL]
)
def test_illegal_transition_raises_and_changes_nothing(
    current: PaymentStatus, new: PaymentStatus
) -> None:
    before = make_payment(current, version=3)
    snapshot = dataclasses.replace(before)
    assert not state.can_transition(current, new)
    with pytest.raises(IllegalTransition) as info:
        state.transition(before, new, 999.0, transaction_id="txn_x")
    assert isinstance(info.value, FailedPrecondition)
    assert info.value.current == current.name
    assert info.value.requested == new.name
    assert before == snapshot
    assert before.status is current
    assert before.version == 3
    assert before.updated_at == 100.0
    assert before.transaction_id == ""


def test_payments_are_frozen() -> None:
    payment = make_payment()
    with pytest.raises(dataclasses.FrozenInstanceError):
        payment.status = S.COMPLETED  # type: ignore[misc]


@pytest.mark.parametrize("status", [s for s in PaymentStatus if s.is_terminal])
def test_terminal_statuses_have_no_exits(status: PaymentStatus) -> None:
    assert state.TRANSITIONS[status] == frozenset()
    for new in PaymentStatus:
        assert not state.can_transition(status, new)


def test_the_terminal_set() -> None:
    assert {s for s in PaymentStatus if s.is_terminal} == {
        S.FAILED,
        S.CANCELLED,
        S.REFUNDED,
        S.EXPIRED,
    }
    # Every status with no way out is terminal (UNSPECIFIED is never stored).
    assert {s for s, exits in state.TRANSITIONS.items() if not exits} == {
        s for s in PaymentStatus if s.is_terminal
    }
    assert not S.COMPLETED.is_terminal  # a completed payment can still be refunded


def test_the_settled_set_is_what_retention_may_drop() -> None:
    assert {s for s in PaymentStatus if s.is_settled} == {
        S.COMPLETED,
        S.FAILED,
        S.CANCELLED,
        S.REFUNDED,
        S.EXPIRED,
    }


def test_every_status_rule_is_a_set_beside_the_table() -> None:
    # The sets other code asks about are consistent with the table they sit beside.
    assert {s for s in PaymentStatus if s.is_terminal} == state.TERMINAL
    assert {s for s in PaymentStatus if s.is_settled} == state.SETTLED
    assert {S.PENDING, S.PROCESSING} == state.AWAITING_PG
    exits = state.TRANSITIONS
    assert {s for s in exits if S.CANCELLED in exits[s]} == state.CANCELLABLE
    assert {s for s in exits if S.REFUNDED in exits[s]} == state.REFUNDABLE
    assert state.PROCESSABLE <= state.AWAITING_PG
    assert not (state.SETTLED & state.AWAITING_PG)
    assert set(PaymentStatus) - {S.UNSPECIFIED} == state.SETTLED | state.AWAITING_PG


@pytest.mark.parametrize("status", sorted(state.CANCELLABLE))
def test_cancel_action_cancels_what_was_not_captured(status: PaymentStatus) -> None:
    assert state.cancel_action(status, refund_requested=False) is state.CancelAction.CANCEL
    with pytest.raises(FailedPrecondition, match="nothing to refund"):
        state.cancel_action(status, refund_requested=True)


@pytest.mark.parametrize("refund_requested", [False, True])
def test_cancel_action_refunds_what_was_captured(refund_requested: bool) -> None:
    action = state.cancel_action(S.COMPLETED, refund_requested=refund_requested)
    assert action is state.CancelAction.REFUND


@pytest.mark.parametrize("status", sorted(state.TERMINAL))
def test_cancel_action_refuses_a_terminal_payment(status: PaymentStatus) -> None:
    with pytest.raises(FailedPrecondition, match=f"payment is {status.name}"):
        state.cancel_action(status, refund_requested=False)


def test_check_refund_takes_what_remains_and_refuses_more_and_changes_nothing() -> None:
    payment = make_payment(S.COMPLETED, refunded=20_000)
    snapshot = dataclasses.replace(payment)
    assert state.check_refund(payment, None) == 30_000
    assert state.check_refund(payment, Money(30_000, "KRW")) == 30_000
    with pytest.raises(InvalidArgument) as info:
        state.check_refund(payment, Money(30_001, "KRW"))
    assert info.value.field == "refund_amount.amount"
    with pytest.raises(InvalidArgument) as info:
        state.check_refund(payment, Money(1, "USD"))
    assert info.value.field == "refund_amount.currency"
    full = make_payment(S.COMPLETED, refunds=(None,) * state.MAX_REFUNDS)
    with pytest.raises(FailedPrecondition, match="refunds"):
        state.check_refund(full, Money(1, "KRW"))
    assert payment == snapshot


def test_check_method_refuses_another_method_only_when_both_are_given() -> None:
    card = make_payment()
    state.check_method(card, PaymentMethod.UNSPECIFIED)
    state.check_method(card, PaymentMethod.CREDIT_CARD)
    state.check_method(make_payment(method=PaymentMethod.UNSPECIFIED), PaymentMethod.MOBILE_PAY)
    with pytest.raises(InvalidArgument) as info:
        state.check_method(card, PaymentMethod.MOBILE_PAY)
    assert info.value.field == "payment_details.method"


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_check_simulated_target_is_the_table_or_a_resend(
    current: PaymentStatus, target: PaymentStatus
) -> None:
    if target in (S.UNSPECIFIED, current):
        state.check_simulated_target(current, target)  # a resend
        return
    with pytest.raises(IllegalTransition):
        state.check_simulated_target(current, target)


def test_sim_clock_is_the_one_place_the_time_scale_applies() -> None:
    clock = SimClock(0.001)
    assert clock.real(900.0) == pytest.approx(0.9)
    assert SimClock().real(2.5) == 2.5
    assert clock.answers_at(make_payment()) == pytest.approx(100.0 + 0.002)


@pytest.mark.parametrize("target", [S.COMPLETED, S.FAILED, S.EXPIRED])
def test_a_simulated_answer_keeps_the_decided_outcome_when_it_matches(
    target: PaymentStatus,
) -> None:
    decided = Outcome(status=target, delay_s=3.0, failure_reason="x")
    assert forced_outcomes.for_status(decided, target) is decided
    other = forced_outcomes.for_status(Outcome(status=S.PROCESSING, delay_s=3.0), target)
    assert other.status is target
    assert other.delay_s == 3.0


def test_the_new_payment_is_pending_at_version_one() -> None:
    cmd = validate()
    outcome = Outcome(status=S.COMPLETED, delay_s=1.5)
    p = cmd.new_payment("pay_9", Scenario.APPROVE, outcome, 50.0, 950.0)
    assert (p.status, p.version, p.created_at, p.updated_at, p.expires_at) == (
        S.PENDING,
        1,
        50.0,
        50.0,
        950.0,
    )
    assert (p.reservation_id, p.user_id, p.amount, p.metadata) == (
        cmd.reservation_id,
        cmd.user_id,
        cmd.amount,
        cmd.metadata,
    )
    assert p.client_secret.startswith("pay_9_secret_")


# -- outcomes ------------------------------------------------------------------

TIMING = outcomes.Timing(
    default_delay_s=2.0, delay_scenario_s=10.0, intent_ttl_s=900.0, random_approve_rate=0.7
)


@pytest.mark.parametrize(
    ("scenario", "override", "status", "delay"),
    [
        (Scenario.APPROVE, None, S.COMPLETED, 2.0),
        (Scenario.APPROVE, 0.5, S.COMPLETED, 0.5),
        (Scenario.APPROVE, 0.0, S.COMPLETED, 0.0),
        (Scenario.DELAY, None, S.COMPLETED, 10.0),
        (Scenario.DELAY, 3.25, S.COMPLETED, 3.25),
        (Scenario.FAIL, None, S.FAILED, 2.0),
        (Scenario.FAIL, 7.0, S.FAILED, 7.0),
        (Scenario.TIMEOUT, None, S.EXPIRED, 900.0),
        (Scenario.TIMEOUT, 1.0, S.EXPIRED, 900.0),  # the PG never answers: override ignored
    ],
)
def test_decide(
    scenario: Scenario, override: float | None, status: PaymentStatus, delay: float
) -> None:
    outcome = outcomes.decide(scenario, TIMING, random.Random(1), override)
    assert outcome.status is status
    assert outcome.delay_s == delay
    if status is S.COMPLETED:
        assert outcome.response_code == outcomes.APPROVED_CODE == 0
        assert outcome.failure_reason == ""
    else:
        assert outcome.failure_reason
        assert outcome.response_code != 0
        assert outcome.gateway_response


def test_fail_draws_its_decline_from_the_table() -> None:
    rng = random.Random(3)
    seen = set()
    for _ in range(200):
        o = outcomes.decide(Scenario.FAIL, TIMING, rng, None)
        assert (o.failure_reason, o.gateway_response, o.response_code) in outcomes.DECLINES
        assert o.response_code != 0
        seen.add(o.failure_reason)
    assert seen == {reason for reason, _, _ in outcomes.DECLINES}


def test_timeout_expires_with_a_reason() -> None:
    o = outcomes.decide(Scenario.TIMEOUT, TIMING, random.Random(0), None)
    assert o.failure_reason == "timeout"
    assert o.response_code != 0


def test_unresolved_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="UNSPECIFIED"):
        outcomes.decide(Scenario.UNSPECIFIED, TIMING, random.Random(0), None)


@pytest.mark.parametrize("rate", [0.7, 0.5, 0.1])
def test_random_approves_at_the_configured_rate(rate: float) -> None:
    timing = dataclasses.replace(TIMING, random_approve_rate=rate)
    rng = random.Random(42)
    n = 10_000
    approved = 0
    for _ in range(n):
        o = outcomes.decide(Scenario.RANDOM, timing, rng, None)
        assert o.delay_s == 2.0
        if o.status is S.COMPLETED:
            approved += 1
        else:
            assert o.status is S.FAILED
            assert o.response_code != 0
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(approved - n * rate) < 5 * sigma


@pytest.mark.parametrize(("rate", "status"), [(0.0, S.FAILED), (1.0, S.COMPLETED)])
def test_random_at_the_extreme_rates_is_certain(rate: float, status: PaymentStatus) -> None:
    timing = dataclasses.replace(TIMING, random_approve_rate=rate)
    rng = random.Random(42)
    assert {outcomes.decide(Scenario.RANDOM, timing, rng, None).status for _ in range(1000)} == {
        status
    }


def test_random_is_reproducible_from_the_seed() -> None:
    def draws(seed: int) -> list[Outcome]:
        rng = random.Random(seed)
        return [outcomes.decide(Scenario.RANDOM, TIMING, rng, None) for _ in range(100)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


# -- validation ----------------------------------------------------------------

VALID: dict[str, Any] = {
    "reservation_id": "res_123",
    "user_id": "user_456",
    "amount": 50_000,
    "currency": "KRW",
    "amount_present": True,
    "method": PaymentMethod.CREDIT_CARD,
    "scenario": Scenario.UNSPECIFIED,
    "webhook_url": "https://example.com/hooks/payment",
    "idempotency_key": "key-1",
    "metadata": Metadata(source="web", tags={"delay_ms": "1500", "k": "v"}),
}
MAX_DELAY_S = 600.0


def validate(**changes: Any) -> CreateIntent:
    """``validate_create`` on ``VALID`` with ``changes``, as the edge calls it."""
    request = validation.CreateRequest(**{**VALID, **changes})
    return validation.validate_create(request, max_delay_s=MAX_DELAY_S)


def test_valid_input_builds_the_command() -> None:
    cmd = validate()
    assert cmd == CreateIntent(
        reservation_id="res_123",
        user_id="user_456",
        amount=Money(50_000, "KRW"),
        method=PaymentMethod.CREDIT_CARD,
        scenario=Scenario.UNSPECIFIED,
        webhook_url="https://example.com/hooks/payment",
        idempotency_key="key-1",
        metadata=VALID["metadata"],
        delay_override_s=1.5,  # the tags are parsed once, into the command
        forced_outcome=None,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"webhook_url": ""},  # optional
        {"idempotency_key": ""},  # optional
        {"webhook_url": "http://localhost:8080/hook?a=1#x"},
        {"webhook_url": "HTTPS://Example.com"},
        {"webhook_url": "http://[::1]:9000/hook"},
        {"reservation_id": "r" * 128, "user_id": "u" * 128},
        {"idempotency_key": "k" * 255},
        {"amount": 1, "currency": "USD"},
        {"amount": validation.MAX_AMOUNT},
        {"metadata": Metadata(tags={f"k{i}": "v" for i in range(validation.MAX_TAGS)})},
        {"metadata": Metadata(user_agent="a" * validation.MAX_META_LEN)},
        {"reservation_id": "예약-1", "user_id": "사용자"},
    ],
)
def test_valid_variants_pass(changes: dict[str, Any]) -> None:
    validate(**changes)


CTRL = "res\x00id"
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("empty reservation_id", {"reservation_id": ""}, "reservation_id"),
    ("empty user_id", {"user_id": ""}, "user_id"),
    ("missing amount", {"amount": 0, "currency": "", "amount_present": False}, "amount"),
    ("zero amount", {"amount": 0}, "amount.amount"),
    ("negative amount", {"amount": -100}, "amount.amount"),
    ("huge amount", {"amount": validation.MAX_AMOUNT + 1}, "amount.amount"),
    ("lower-case currency", {"currency": "krw"}, "amount.currency"),
    ("two-letter currency", {"currency": "KR"}, "amount.currency"),
    ("four-letter currency", {"currency": "KRWX"}, "amount.currency"),
    ("empty currency", {"currency": ""}, "amount.currency"),
    ("currency with newline", {"currency": "KRW\n"}, "amount.currency"),
    ("129-char reservation_id", {"reservation_id": "r" * 129}, "reservation_id"),
    ("129-char user_id", {"user_id": "u" * 129}, "user_id"),
    ("256-char idempotency_key", {"idempotency_key": "k" * 256}, "idempotency_key"),
    ("NUL in reservation_id", {"reservation_id": CTRL}, "reservation_id"),
    ("newline in user_id", {"user_id": "user\n1"}, "user_id"),
    ("DEL in idempotency_key", {"idempotency_key": "k\x7f"}, "idempotency_key"),
    ("ftp webhook", {"webhook_url": "ftp://x"}, "webhook_url"),
    ("not a url", {"webhook_url": "not a url"}, "webhook_url"),
    ("no host", {"webhook_url": "http://"}, "webhook_url"),
    ("no host but port", {"webhook_url": "http://:80/"}, "webhook_url"),
    ("relative", {"webhook_url": "/relative"}, "webhook_url"),
    ("no scheme", {"webhook_url": "example.com/hook"}, "webhook_url"),
    ("javascript", {"webhook_url": "javascript:alert(1)"}, "webhook_url"),
    ("space in url", {"webhook_url": "https://example.com/a b"}, "webhook_url"),
    ("nbsp in url", {"webhook_url": "https://example.com/\u00a0"}, "webhook_url"),
    ("tab in url", {"webhook_url": "https://example.com/\t"}, "webhook_url"),
    ("bad port", {"webhook_url": "http://example.com:99999/"}, "webhook_url"),
    ("port zero", {"webhook_url": "http://example.com:0/"}, "webhook_url"),
    ("broken ipv6", {"webhook_url": "http://[::1/"}, "webhook_url"),
    ("huge url", {"webhook_url": "https://e.com/" + "a" * 2048}, "webhook_url"),
    (
        "long metadata.source",
        {"metadata": Metadata(source="s" * (validation.MAX_META_LEN + 1))},
        "metadata.source",
    ),
    ("control in ip", {"metadata": Metadata(ip_address="1.2.3.4\r\n")}, "metadata.ip_address"),
    (
        "too many tags",
        {"metadata": Metadata(tags={f"k{i}": "v" for i in range(validation.MAX_TAGS + 1)})},
        "metadata.tags",
    ),
    ("empty tag key", {"metadata": Metadata(tags={"": "v"})}, "metadata.tags key"),
    ("long tag key", {"metadata": Metadata(tags={"k" * 65: "v"})}, "metadata.tags key"),
    ("long tag value", {"metadata": Metadata(tags={"k": "v" * 513})}, "metadata.tags[k]"),
    ("control in tag value", {"metadata": Metadata(tags={"k": "a\x1bb"})}, "metadata.tags[k]"),
]


@pytest.mark.parametrize(
    ("changes", "field"), [(c, f) for _, c, f in INVALID], ids=[name for name, _, _ in INVALID]
)
def test_invalid_create_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate(**changes)
    assert info.value.field == field
    assert str(info.value).startswith(f"invalid {field}: ")


DELAY_FIELD = "metadata.tags[delay_ms]"


def test_the_test_outcome_tag_is_parsed_into_the_command() -> None:
    tags = {"test_outcome": "insufficient_funds"}
    cmd = validate(metadata=Metadata(tags=tags))
    assert cmd.forced_outcome == "insufficient_funds"
    assert cmd.delay_override_s is None
    with pytest.raises(InvalidArgument) as info:
        validate(metadata=Metadata(tags={"test_outcome": "x"}))
    assert info.value.field == "metadata.tags[test_outcome]"


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({}, None),
        ({"other": "1"}, None),
        ({"delay_ms": "0"}, 0.0),
        ({"delay_ms": "1500"}, 1.5),
        ({"delay_ms": "600000"}, 600.0),  # exactly the maximum
        ({"delay_ms": "000250"}, 0.25),
    ],
)
def test_delay_override(tags: dict[str, str], expected: float | None) -> None:
    assert validation.delay_override_s(tags, 600.0) == expected


@pytest.mark.parametrize(
    "raw",
    ["abc", "-1", "+5", "1.5", "", " 100", "1e3", "600001", "\u0661\u0662", "99999999999"],
)
def test_bad_delay_override_names_the_tag(raw: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.delay_override_s({"delay_ms": raw}, 600.0)
    assert info.value.field == DELAY_FIELD


def test_huge_delay_override_is_invalid_argument_not_a_crash() -> None:
    raw = "1" + "0" * 400  # 401 characters: within MAX_TAG_VALUE_LEN, so the tag parse refuses it
    tags = {"delay_ms": raw}
    with pytest.raises(InvalidArgument) as info:
        validate(metadata=Metadata(tags=tags))
    assert info.value.field == DELAY_FIELD
    with pytest.raises(InvalidArgument) as info:
        validation.delay_override_s(tags, 600.0)
    assert info.value.field == DELAY_FIELD


@pytest.mark.parametrize(
    ("requested", "from_metadata", "default", "expected"),
    [
        (Scenario.FAIL, Scenario.DELAY, Scenario.APPROVE, Scenario.FAIL),
        (Scenario.UNSPECIFIED, Scenario.DELAY, Scenario.APPROVE, Scenario.DELAY),
        (Scenario.UNSPECIFIED, Scenario.UNSPECIFIED, Scenario.TIMEOUT, Scenario.TIMEOUT),
        (Scenario.RANDOM, Scenario.UNSPECIFIED, Scenario.APPROVE, Scenario.RANDOM),
    ],
)
def test_resolve_scenario(
    requested: Scenario, from_metadata: Scenario, default: Scenario, expected: Scenario
) -> None:
    got = outcomes.resolve_scenario(requested, Metadata(scenario=from_metadata), default)
    assert got is expected


# -- payment details -------------------------------------------------------------

CARD: dict[str, str] = {
    "card_number": "4111 1111 1111 1111",
    "expiry_month": "12",
    "expiry_year": "2030",
    "cardholder_name": "HONG GILDONG",
    "cvv": "123",
}
CARD_FIELD = "payment_details.credit_card"


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {key: "" for key in CARD},  # every part is optional
        {"card_number": "411111111111"},  # 12 digits
        {"card_number": "4111111111111111111"},  # 19 digits
        {"expiry_month": "1", "expiry_year": "30"},
        {"expiry_month": "01"},
        {"cvv": "1234"},
    ],
)
def test_valid_card_passes(changes: dict[str, str]) -> None:
    validation.validate_card(**{**CARD, **changes})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"card_number": "4111"}, "card_number"),
        ({"card_number": "41111111111111111111"}, "card_number"),  # 20 digits
        ({"card_number": "4111-1111-1111-1111"}, "card_number"),
        ({"card_number": "4111 1111 1111 111x"}, "card_number"),
        ({"card_number": "\u0664" * 16}, "card_number"),  # Arabic-Indic digits
        ({"expiry_month": "0"}, "expiry_month"),
        ({"expiry_month": "13"}, "expiry_month"),
        ({"expiry_month": "ab"}, "expiry_month"),
        ({"expiry_month": "-1"}, "expiry_month"),
        ({"expiry_year": "203"}, "expiry_year"),
        ({"expiry_year": "20300"}, "expiry_year"),
        ({"expiry_year": "twenty"}, "expiry_year"),
        ({"cardholder_name": "x" * 129}, "cardholder_name"),
        ({"cardholder_name": "A\nB"}, "cardholder_name"),
        ({"cvv": "12"}, "cvv"),
        ({"cvv": "12345"}, "cvv"),
        ({"cvv": "12a"}, "cvv"),
    ],
)
def test_invalid_card_names_the_field(changes: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.validate_card(**{**CARD, **changes})
    assert info.value.field == f"{CARD_FIELD}.{field}"


def test_superscript_expiry_month_is_invalid_argument_not_a_crash() -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.validate_card(**{**CARD, "expiry_month": "\u00b2"})
    assert info.value.field == f"{CARD_FIELD}.expiry_month"


@pytest.mark.parametrize(
    ("number", "cvv"),
    [
        ("4111111111", "123"),  # too short
        ("41111111111111119999999", "123"),  # too long
        ("4111 1111 1111 111x", "123"),  # not digits
        ("4111111111111111", "98765"),  # the cvv is bad: the number must not leak either
    ],
)
def test_card_errors_never_echo_the_secret(number: str, cvv: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.validate_card(**{**CARD, "card_number": number, "cvv": cvv})
    text = f"{info.value} {info.value.reason} {info.value.args!r}"
    for secret in (number, number.replace(" ", ""), cvv):
        assert secret not in text


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({}, None),
        ({"account_number": "110-123-456789"}, None),
        ({"bank_code": "", "account_number": "", "account_holder": ""}, None),
        ({"bank_code": "b" * 17}, "bank_code"),
        ({"account_number": "12-34"}, "account_number"),  # 4 digits
        ({"account_number": "1" * 35}, "account_number"),
        ({"account_number": "12345a7"}, "account_number"),
        ({"account_holder": "h" * 129}, "account_holder"),
        ({"account_holder": "Kim\x00"}, "account_holder"),
    ],
)
def test_bank_transfer(changes: dict[str, str], field: str | None) -> None:
    args = {"bank_code": "088", "account_number": "110123456789", "account_holder": "KIM"}
    args.update(changes)
    if field is None:
        validation.validate_bank_transfer(**args)
        return
    with pytest.raises(InvalidArgument) as info:
        validation.validate_bank_transfer(**args)
    assert info.value.field == f"payment_details.bank_transfer.{field}"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({}, None),
        ({"mobile_number": "+82-10-1234-5678"}, None),
        ({"mobile_number": "", "provider": ""}, None),
        ({"mobile_number": "12345"}, "mobile_number"),
        ({"mobile_number": "010-CALL-ME"}, "mobile_number"),
        ({"mobile_number": "1" * 21}, "mobile_number"),
        ({"mobile_number": "+82 10 1234 5678"}, "mobile_number"),
        ({"provider": "p" * 65}, "provider"),
    ],
)
def test_mobile_pay(changes: dict[str, str], field: str | None) -> None:
    args = {"provider": "kakaopay", "mobile_number": "01012345678"}
    args.update(changes)
    if field is None:
        validation.validate_mobile_pay(**args)
        return
    with pytest.raises(InvalidArgument) as info:
        validation.validate_mobile_pay(**args)
    assert info.value.field == f"payment_details.mobile_pay.{field}"


# -- ids -----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["pay", "pmt", "txn", "evt"])
def test_id_shape(prefix: str) -> None:
    assert re.fullmatch(rf"{prefix}_[0-9a-f]{{24}}", ids.new_id(prefix))


def test_secret_shape() -> None:
    secret = ids.new_secret("pay_1_secret_")
    assert re.fullmatch(r"pay_1_secret_[A-Za-z0-9_-]{24}", secret)


def test_ids_are_unique_across_many_pool_refills() -> None:
    n = 100_000  # 12 bytes each: about 300 refills of the 4 KiB pool
    made = {ids.new_id("pay") for _ in range(n)}
    assert len(made) == n
    secrets = {ids.new_secret("s") for _ in range(n)}
    assert len(secrets) == n


def test_accepted_webhook_urls_are_remembered_within_a_bound() -> None:
    # A load test sends one URL with every request: it is parsed once.
    validation._ACCEPTED_URLS.clear()
    url = "https://example.com/hooks/remembered"
    assert validation.check_webhook_url("webhook_url", url) == url
    assert url in validation._ACCEPTED_URLS
    # A client sending a new URL each time cannot grow it past the bound.
    for i in range(validation.ACCEPTED_URLS_KEPT * 3):
        validation.check_webhook_url("webhook_url", f"https://example.com/hooks/{i}")
    assert len(validation._ACCEPTED_URLS) <= validation.ACCEPTED_URLS_KEPT
    # A refused URL is never remembered: it is refused, with its reason, every time.
    for _ in range(2):
        with pytest.raises(InvalidArgument, match="http:// or https://"):
            validation.check_webhook_url("webhook_url", "ftp://example.com/hook")
    assert "ftp://example.com/hook" not in validation._ACCEPTED_URLS
