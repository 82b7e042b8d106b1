"""payment.v1 driven by a stock grpcio client compiled from proto/, on a real socket.

Every error case asserts the status code, that the message names the field
(or says "not found" / "conflict", which the known caller looks for), and that
it leaks nothing (``assert_safe_details`` runs on every error).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import grpc
import pytest
import trio
from purerpc.grpclib.status import StatusCode

from paysim import errors
from paysim._proto.proto.common.v1.types_pb2 import Money
from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim.domain.models import PaymentStatus
from paysim.domain.outcomes import DECLINES
from paysim.entrypoints.grpc import errors as grpc_errors
from tests.grpc_helpers import (
    StartApp,
    assert_safe_details,
    call,
    call_error,
    create_request,
    krw,
    make_settings,
    payment_stub,
)

Code = grpc.StatusCode
NS = 1_000_000_000
DECLINE_REASONS = {reason for reason, _, _ in DECLINES}


async def create(stub: Any, **fields: Any) -> Any:
    return await call(stub.CreatePaymentIntent, create_request(**fields))


async def get_payment(stub: Any, payment_intent_id: str, user_id: str = "") -> Any:
    request = pb.GetPaymentStatusRequest(payment_intent_id=payment_intent_id, user_id=user_id)
    return (await call(stub.GetPaymentStatus, request)).payment


async def process(stub: Any, payment_intent_id: str, **fields: Any) -> Any:
    request = pb.ProcessPaymentRequest(payment_intent_id=payment_intent_id, **fields)
    return await call(stub.ProcessPayment, request)


# -- CreatePaymentIntent ------------------------------------------------------


async def test_create_payment_intent(stub):
    before_ns = time.time_ns()
    resp = await create(
        stub,
        reservation_id="rsv_42",
        user_id="user_42",
        amount=krw(120_000),
        method=pb.PAYMENT_METHOD_CREDIT_CARD,
        scenario=pb.PAYMENT_SCENARIO_APPROVE,
        webhook_url="https://example.com/hooks/payment",
        idempotency_key="key-1",
    )
    after_ns = time.time_ns()

    assert resp.payment_intent_id.startswith("pay_")
    assert len(resp.payment_intent_id) > len("pay_")
    assert resp.status == pb.PAYMENT_STATUS_PENDING
    assert resp.client_secret
    assert resp.payment_url
    assert resp.payment_intent_id in resp.payment_url
    assert resp.payment_url.startswith(("https://", "http://"))
    assert not resp.HasField("error")

    # expires_at is created_at + INTENT_TTL (15 min by default), from the server's own clock.
    payment = await get_payment(stub, resp.payment_intent_id)
    created_ns = payment.created_at.ToNanoseconds()
    assert before_ns - NS <= created_ns <= after_ns + NS
    ttl_ns = resp.expires_at.ToNanoseconds() - created_ns
    assert abs(ttl_ns - 15 * 60 * NS) <= 1_000_000  # within 1 ms


async def test_ids_and_secrets_are_unique(stub):
    first = await create(stub)
    second = await create(stub)
    assert first.payment_intent_id != second.payment_intent_id
    assert first.client_secret != second.client_secret


async def test_known_callers_minimal_request(stub):
    """The platform gateway sends only reservation_id, user_id and amount."""
    request = pb.CreatePaymentIntentRequest(
        reservation_id="rsv_min", user_id="user_min", amount=krw(10_000)
    )
    assert {f.name for f, _ in request.ListFields()} == {"reservation_id", "user_id", "amount"}
    resp = await call(stub.CreatePaymentIntent, request)
    assert resp.payment_intent_id.startswith("pay_")
    assert resp.status == pb.PAYMENT_STATUS_PENDING

    # The default scenario (approve) was applied; the known caller asks without user_id.
    payment = await get_payment(stub, resp.payment_intent_id)
    assert payment.metadata.scenario == pb.PAYMENT_SCENARIO_APPROVE
    assert payment.method == pb.PAYMENT_METHOD_UNSPECIFIED
    processed = await process(stub, resp.payment_intent_id)
    assert processed.status == pb.PAYMENT_STATUS_COMPLETED


# -- GetPaymentStatus ---------------------------------------------------------

FULL_METADATA = pb.PaymentMetadata(
    source="web",
    user_agent="Mozilla/5.0",
    ip_address="203.0.113.7",
    session_id="sess_9",
    tags={"campaign": "spring", "seat": "A-12"},
)


@pytest.mark.parametrize("as_owner", [False, True], ids=["without-user-id", "with-owner-user-id"])
async def test_get_payment_status_returns_the_full_payment(stub, as_owner):
    created = await create(
        stub,
        reservation_id="rsv_full",
        user_id="user_full",
        amount=Money(amount=99_000, currency="USD"),
        method=pb.PAYMENT_METHOD_MOBILE_PAY,
        scenario=pb.PAYMENT_SCENARIO_FAIL,
        metadata=FULL_METADATA,
    )
    p = await get_payment(stub, created.payment_intent_id, "user_full" if as_owner else "")

    assert p.payment_intent_id == created.payment_intent_id
    assert p.reservation_id == "rsv_full"
    assert p.user_id == "user_full"
    assert p.status == pb.PAYMENT_STATUS_PENDING
    assert (p.amount.amount, p.amount.currency) == (99_000, "USD")
    assert p.method == pb.PAYMENT_METHOD_MOBILE_PAY
    assert p.HasField("created_at")
    assert p.updated_at == p.created_at
    assert not p.HasField("processed_at")
    assert not p.HasField("result")
    assert p.payment_id == ""
    assert p.transaction_id == ""
    m = p.metadata
    assert (m.source, m.user_agent, m.ip_address, m.session_id) == (
        "web",
        "Mozilla/5.0",
        "203.0.113.7",
        "sess_9",
    )
    assert dict(m.tags) == {"campaign": "spring", "seat": "A-12"}
    assert m.scenario == pb.PAYMENT_SCENARIO_FAIL


async def test_unspecified_scenario_takes_metadata_scenario(stub):
    metadata = pb.PaymentMetadata(scenario=pb.PAYMENT_SCENARIO_FAIL)
    created = await create(stub, metadata=metadata)
    assert (await get_payment(stub, created.payment_intent_id)).metadata.scenario == (
        pb.PAYMENT_SCENARIO_FAIL
    )
    assert (await process(stub, created.payment_intent_id)).status == pb.PAYMENT_STATUS_FAILED


async def test_request_scenario_wins_over_metadata_scenario(stub):
    metadata = pb.PaymentMetadata(scenario=pb.PAYMENT_SCENARIO_FAIL)
    created = await create(stub, scenario=pb.PAYMENT_SCENARIO_APPROVE, metadata=metadata)
    assert (await process(stub, created.payment_intent_id)).status == pb.PAYMENT_STATUS_COMPLETED


async def test_wrong_user_is_not_found_like_an_unknown_id(stub):
    created = await create(stub, user_id="owner")
    pid = created.payment_intent_id
    wrong_user = await call_error(
        stub.GetPaymentStatus, pb.GetPaymentStatusRequest(payment_intent_id=pid, user_id="thief")
    )
    assert wrong_user.code() == Code.NOT_FOUND
    assert "not found" in wrong_user.details()

    unknown_id = "pay_000000000000000000000000"
    unknown = await call_error(
        stub.GetPaymentStatus, pb.GetPaymentStatusRequest(payment_intent_id=unknown_id)
    )
    assert unknown.code() == Code.NOT_FOUND
    assert "not found" in unknown.details()
    # Nothing tells the thief that the payment exists.
    assert wrong_user.details().replace(pid, "ID") == unknown.details().replace(unknown_id, "ID")


@pytest.mark.parametrize("method", ["GetPaymentStatus", "ProcessPayment"])
async def test_unknown_payment_is_not_found(stub, method):
    request_type = getattr(pb, f"{method}Request")
    err = await call_error(getattr(stub, method), request_type(payment_intent_id="pay_nope"))
    assert err.code() == Code.NOT_FOUND
    assert "not found" in err.details()


# -- ProcessPayment -----------------------------------------------------------


async def test_process_payment_approves_a_pending_intent(app, stub):
    created = await create(stub, scenario=pb.PAYMENT_SCENARIO_APPROVE)
    pid = created.payment_intent_id
    before_ns = time.time_ns()
    resp = await process(
        stub,
        pid,
        payment_details=pb.PaymentDetails(
            method=pb.PAYMENT_METHOD_CREDIT_CARD,
            credit_card=pb.CreditCardDetails(
                card_number="4111 1111 1111 1111",
                expiry_month="12",
                expiry_year="2030",
                cardholder_name="KIM MINJI",
                cvv="123",
            ),
        ),
    )
    after_ns = time.time_ns()

    assert resp.status == pb.PAYMENT_STATUS_COMPLETED
    assert resp.payment_id.startswith("pmt_")
    assert resp.transaction_id.startswith("txn_")
    assert before_ns - NS <= resp.processed_at.ToNanoseconds() <= after_ns + NS
    assert resp.result.success
    assert resp.result.response_code == 0
    assert resp.result.failure_reason == ""
    assert resp.result.processed_at == resp.processed_at
    assert not resp.HasField("error")

    # Exactly one status change was announced, and the intent's timer is gone.
    [change] = app.notifier.for_payment(pid)
    assert (change.previous, change.payment.status) == (
        PaymentStatus.PENDING,
        PaymentStatus.COMPLETED,
    )
    assert change.payment.transaction_id == resp.transaction_id
    assert app.running.simulator.pending == 0


async def test_process_payment_fail_scenario(stub):
    created = await create(stub, scenario=pb.PAYMENT_SCENARIO_FAIL)
    resp = await process(stub, created.payment_intent_id)
    assert resp.status == pb.PAYMENT_STATUS_FAILED
    assert not resp.result.success
    assert resp.result.failure_reason in DECLINE_REASONS
    assert resp.result.gateway_response
    assert resp.result.response_code != 0
    assert resp.HasField("processed_at")


@pytest.mark.parametrize(
    "scenario",
    [pb.PAYMENT_SCENARIO_RANDOM, pb.PAYMENT_SCENARIO_FAIL, pb.PAYMENT_SCENARIO_APPROVE],
    ids=["random", "fail", "approve"],
)
async def test_repeated_process_payment_does_not_decide_again(app, stub, scenario):
    created = await create(stub, scenario=scenario)
    pid = created.payment_intent_id
    first = await process(stub, pid)
    assert first.status in (pb.PAYMENT_STATUS_COMPLETED, pb.PAYMENT_STATUS_FAILED)
    for _ in range(4):
        assert await process(stub, pid) == first

    # GetPaymentStatus tells the same story, and only one change was ever announced.
    p = await get_payment(stub, pid)
    assert p.status == first.status
    assert p.payment_id == first.payment_id
    assert p.transaction_id == first.transaction_id
    assert p.processed_at == first.processed_at
    assert p.result == first.result
    assert p.updated_at.ToNanoseconds() >= p.created_at.ToNanoseconds()
    assert len(app.notifier.for_payment(pid)) == 1


async def test_process_payment_on_a_timeout_intent_stays_unanswered(stub):
    created = await create(stub, scenario=pb.PAYMENT_SCENARIO_TIMEOUT)
    resp = await process(stub, created.payment_intent_id)
    assert resp.status == pb.PAYMENT_STATUS_PROCESSING
    assert resp.payment_id == ""
    assert not resp.HasField("result")


# -- outcomes resolved by the simulator's timer --------------------------------


async def test_timer_resolves_an_intent_and_announces_it(start_app: StartApp):
    app = await start_app(make_settings(default_delay_s=0.05))
    with payment_stub(app.grpc_port) as stub:
        created = await create(stub)
        with trio.fail_after(10):
            await app.notifier.wait_for(1)  # an event, not the clock
        [change] = app.notifier.changes
        assert change.payment.payment_intent_id == created.payment_intent_id
        assert change.previous is PaymentStatus.PENDING
        assert change.payment.status is PaymentStatus.COMPLETED
        assert change.payment.payment_id.startswith("pmt_")

        p = await get_payment(stub, created.payment_intent_id)
        assert p.status == pb.PAYMENT_STATUS_COMPLETED
        assert p.payment_id == change.payment.payment_id
        assert p.transaction_id == change.payment.transaction_id
        assert p.result.success
        # ProcessPayment afterwards reports the same outcome and announces nothing new.
        resp = await process(stub, created.payment_intent_id)
        assert (resp.status, resp.payment_id) == (pb.PAYMENT_STATUS_COMPLETED, p.payment_id)
        assert len(app.notifier.changes) == 1
        assert app.running.simulator.pending == 0


async def test_delay_ms_tag_sets_a_requests_own_delay(app, stub):
    """The app's default delay is 30 s; this intent asks for 20 ms and fails by its timer."""
    metadata = pb.PaymentMetadata(tags={"delay_ms": "20"})
    created = await create(stub, scenario=pb.PAYMENT_SCENARIO_FAIL, metadata=metadata)
    with trio.fail_after(10):
        await app.notifier.wait_for(1)
    [change] = app.notifier.changes
    assert change.payment.payment_intent_id == created.payment_intent_id
    assert change.payment.status is PaymentStatus.FAILED
    assert change.payment.result is not None
    assert change.payment.result.failure_reason in DECLINE_REASONS


# -- invalid arguments --------------------------------------------------------

LONG = "x" * 200
UNKNOWN_ENUM: Any = 99  # proto3 enums are open: a stock client can send any number

INVALID_CREATE = {
    "missing-amount": (
        pb.CreatePaymentIntentRequest(reservation_id="r", user_id="u"),
        "amount",
    ),
    "amount-zero": (create_request(amount=krw(0)), "amount.amount"),
    "amount-negative": (create_request(amount=krw(-5)), "amount.amount"),
    "currency-lower-case": (create_request(amount=Money(amount=1, currency="krw")), "currency"),
    "currency-empty": (create_request(amount=Money(amount=1)), "currency"),
    "currency-not-iso": (create_request(amount=Money(amount=1, currency="ABC")), "currency"),
    "currency-xxx": (create_request(amount=Money(amount=1, currency="XXX")), "currency"),
    "reservation-id-bidi": (create_request(reservation_id="rsv\u202e1"), "reservation_id"),
    "user-id-zero-width": (create_request(user_id="user\u200b1"), "user_id"),
    "idempotency-key-isolate": (create_request(idempotency_key="k\u2066"), "idempotency_key"),
    "reservation-id-empty": (create_request(reservation_id=""), "reservation_id"),
    "user-id-empty": (create_request(user_id=""), "user_id"),
    "reservation-id-oversized": (create_request(reservation_id=LONG), "reservation_id"),
    "user-id-oversized": (create_request(user_id=LONG), "user_id"),
    "idempotency-key-oversized": (create_request(idempotency_key="k" * 300), "idempotency_key"),
    "metadata-source-oversized": (
        create_request(metadata=pb.PaymentMetadata(source="s" * 600)),
        "metadata.source",
    ),
    "webhook-url-ftp": (create_request(webhook_url="ftp://x"), "webhook_url"),
    "webhook-url-not-a-url": (create_request(webhook_url="not-a-url"), "webhook_url"),
    "method-unknown": (create_request(method=UNKNOWN_ENUM), "method"),
    "scenario-unknown": (create_request(scenario=UNKNOWN_ENUM), "scenario"),
    "metadata-scenario-unknown": (
        create_request(metadata=pb.PaymentMetadata(scenario=UNKNOWN_ENUM)),
        "metadata.scenario",
    ),
    "delay-ms-tag-not-a-number": (
        create_request(metadata=pb.PaymentMetadata(tags={"delay_ms": "soon"})),
        "delay_ms",
    ),
    "delay-ms-tag-negative": (
        create_request(metadata=pb.PaymentMetadata(tags={"delay_ms": "-5"})),
        "delay_ms",
    ),
}


@pytest.mark.parametrize(("request_", "field"), INVALID_CREATE.values(), ids=INVALID_CREATE.keys())
async def test_create_rejects_invalid_argument(app, stub, request_, field):
    err = await call_error(stub.CreatePaymentIntent, request_)
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in err.details()
    # Nothing was created, nothing scheduled.
    assert app.running.simulator.pending == 0
    assert app.notifier.changes == []


@pytest.mark.parametrize("field", ["method", "scenario"])
async def test_unknown_enum_message_names_the_field_exactly(stub, field):
    """``method`` must not be confused with ``metadata.*``: check the whole field token."""
    err = await call_error(stub.CreatePaymentIntent, create_request(**{field: UNKNOWN_ENUM}))
    assert err.code() == Code.INVALID_ARGUMENT
    assert f"invalid {field}:" in err.details()


SECRET_CARD = "41111111111111119999"  # 20 digits: one too many
INVALID_PROCESS = {
    "card-number-too-long": (
        pb.PaymentDetails(credit_card=pb.CreditCardDetails(card_number=SECRET_CARD)),
        "card_number",
        SECRET_CARD,
    ),
    "card-number-letters": (
        pb.PaymentDetails(credit_card=pb.CreditCardDetails(card_number="4111x11111111111")),
        "card_number",
        "4111x11111111111",
    ),
    "cvv-too-long": (
        pb.PaymentDetails(credit_card=pb.CreditCardDetails(cvv="98765")),
        "cvv",
        "98765",
    ),
    "expiry-month": (
        pb.PaymentDetails(credit_card=pb.CreditCardDetails(expiry_month="13")),
        "expiry_month",
        None,
    ),
    "details-method-unknown": (
        pb.PaymentDetails(method=UNKNOWN_ENUM),
        "payment_details.method",
        None,
    ),
}


@pytest.mark.parametrize(
    ("details", "field", "secret"), INVALID_PROCESS.values(), ids=INVALID_PROCESS.keys()
)
async def test_process_rejects_invalid_details_without_echoing_secrets(
    app, stub, details, field, secret
):
    created = await create(stub)
    pid = created.payment_intent_id
    err = await call_error(
        stub.ProcessPayment,
        pb.ProcessPaymentRequest(payment_intent_id=pid, payment_details=details),
    )
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in err.details()
    if secret is not None:
        assert secret not in err.details()
        assert secret[:6] not in err.details()
    # The bad request changed nothing.
    assert (await get_payment(stub, pid)).status == pb.PAYMENT_STATUS_PENDING
    assert app.notifier.changes == []


async def test_process_rejects_a_method_other_than_the_intents(stub):
    created = await create(stub, method=pb.PAYMENT_METHOD_CREDIT_CARD)
    details = pb.PaymentDetails(method=pb.PAYMENT_METHOD_BANK_TRANSFER)
    err = await call_error(
        stub.ProcessPayment,
        pb.ProcessPaymentRequest(
            payment_intent_id=created.payment_intent_id, payment_details=details
        ),
    )
    assert err.code() == Code.INVALID_ARGUMENT
    assert "payment_details.method" in err.details()


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("GetPaymentStatus", pb.GetPaymentStatusRequest(), "payment_intent_id"),
        (
            "GetPaymentStatus",
            pb.GetPaymentStatusRequest(payment_intent_id="pay_x", user_id=LONG),
            "user_id",
        ),
        ("ProcessPayment", pb.ProcessPaymentRequest(), "payment_intent_id"),
        (
            "ProcessPayment",
            pb.ProcessPaymentRequest(payment_intent_id="pay_x", idempotency_key="k" * 300),
            "idempotency_key",
        ),
        (
            "GetPaymentStatus",
            pb.GetPaymentStatusRequest(payment_intent_id="pay\u202e"),
            "payment_intent_id",
        ),
        (
            "GetPaymentStatus",
            pb.GetPaymentStatusRequest(payment_intent_id="pay_x", user_id="u\u200f"),
            "user_id",
        ),
        (
            "ProcessPayment",
            pb.ProcessPaymentRequest(payment_intent_id="pay_x", idempotency_key="k\ufeff"),
            "idempotency_key",
        ),
        (
            "SimulateWebhook",
            pb.SimulateWebhookRequest(payment_intent_id="p\u2069"),
            "payment_intent_id",
        ),
        (
            "ListPayments",
            pb.ListPaymentsRequest(user_id="u", reservation_id="r\u202d"),
            "reservation_id",
        ),
        (
            "CancelPayment",
            pb.CancelPaymentRequest(payment_intent_id="pay_x", idempotency_key="k\u0085"),
            "idempotency_key",
        ),
    ],
    ids=[
        "get-empty-id",
        "get-oversized-user",
        "process-empty-id",
        "process-oversized-key",
        "get-bidi-id",
        "get-rlm-user",
        "process-bom-key",
        "simulate-pdi-id",
        "list-lro-reservation",
        "cancel-c1-key",
    ],
)
async def test_other_rpcs_reject_invalid_argument(stub, method, request_, field):
    err = await call_error(getattr(stub, method), request_)
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in err.details()


# -- idempotency --------------------------------------------------------------


async def test_same_key_same_parameters_replays_the_original(app, stub):
    first = await create(stub, idempotency_key="idem-1", amount=krw(30_000))
    again = await create(stub, idempotency_key="idem-1", amount=krw(30_000))
    assert again.payment_intent_id == first.payment_intent_id
    assert again.client_secret == first.client_secret
    assert again.expires_at == first.expires_at
    assert app.running.simulator.pending == 1  # nothing new was started


async def test_same_key_different_parameters_is_a_conflict(app, stub):
    first = await create(stub, idempotency_key="idem-2", amount=krw(30_000))
    err = await call_error(
        stub.CreatePaymentIntent, create_request(idempotency_key="idem-2", amount=krw(31_000))
    )
    assert err.code() == Code.ALREADY_EXISTS
    assert "conflict" in err.details()
    assert app.running.simulator.pending == 1
    # The original is untouched.
    assert (await get_payment(stub, first.payment_intent_id)).amount.amount == 30_000


async def test_idempotency_keys_are_per_user(stub):
    mine = await create(stub, idempotency_key="idem-3", user_id="alice")
    theirs = await create(stub, idempotency_key="idem-3", user_id="bob")
    assert mine.payment_intent_id != theirs.payment_intent_id


# -- not yet implemented -------------------------------------------------------


# -- capacity -----------------------------------------------------------------


async def test_max_pending_payments_turns_overload_into_resource_exhausted(start_app, settings):
    capped = dataclasses.replace(
        settings, simulation=dataclasses.replace(settings.simulation, max_pending_payments=2)
    )
    app = await start_app(capped)
    with payment_stub(app.grpc_port) as stub:
        first = await create(stub, idempotency_key="cap-1")
        await create(stub)
        err = await call_error(stub.CreatePaymentIntent, create_request(idempotency_key="cap-3"))
        assert err.code() == Code.RESOURCE_EXHAUSTED
        assert app.running.simulator.pending == 2

        # A replay of an existing intent is still answered at capacity.
        replay = await create(stub, idempotency_key="cap-1")
        assert replay.payment_intent_id == first.payment_intent_id

        # Resolving one frees a slot; the rejected key was not kept, so it works now.
        await process(stub, first.payment_intent_id)
        assert app.running.simulator.pending == 1
        third = await create(stub, idempotency_key="cap-3")
        assert third.payment_intent_id.startswith("pay_")
        assert app.running.simulator.pending == 2


# -- what a client never sees ----------------------------------------------------


@pytest.mark.parametrize(
    "leaky",
    [
        "Traceback (most recent call last):",
        "<paysim.service.PaymentService object at 0x7f3a2c1d9e80>",
        "KeyError('amount')",
        "NotFound: payment",
        "",
    ],
)
def test_the_leak_check_itself_catches_leaks(leaky):
    with pytest.raises(AssertionError):
        assert_safe_details(leaky)


async def test_undecodable_request_is_invalid_argument(channel):
    raw = channel.unary_unary("/payment.v1.PaymentService/CreatePaymentIntent")  # bytes as is
    err = await call_error(raw, b"\xff\xff\xff\xff")
    assert err.code() == Code.INVALID_ARGUMENT
    assert "CreatePaymentIntentRequest" in err.details()


async def test_unknown_method_is_unimplemented(channel):
    raw = channel.unary_unary("/payment.v1.PaymentService/RefundEverything")
    err = await call_error(raw, b"")
    assert err.code() == Code.UNIMPLEMENTED


def _subclasses(kind: type[errors.PaysimError]) -> list[type[errors.PaysimError]]:
    return [kind, *(k for sub in kind.__subclasses__() for k in _subclasses(sub))]


DOMAIN_ERRORS = [k for k in _subclasses(errors.PaysimError)[1:] if k.__module__ == errors.__name__]


@pytest.mark.parametrize("kind", DOMAIN_ERRORS, ids=lambda k: k.__name__)
def test_every_domain_error_maps_to_a_grpc_status_in_the_edge_table(
    kind: type[errors.PaysimError],
) -> None:
    # Every error in paysim.errors' tree, each made the way its raisers make it.
    samples: dict[type[errors.PaysimError], errors.PaysimError] = {
        errors.InvalidArgument: errors.InvalidArgument("field", "is wrong"),
        errors.NotFound: errors.NotFound("payment", "pay_1"),
        errors.IdempotencyConflict: errors.IdempotencyConflict("k"),
        errors.IllegalTransition: errors.IllegalTransition("FAILED", "COMPLETED"),
        errors.StoreUnavailable: errors.StoreUnavailable(),
    }
    exc = samples.get(kind) or kind("message")
    status = grpc_errors.status_for(exc)
    assert status is not None, f"{kind.__name__} has no row in the edge's table"
    assert status.status_code not in (StatusCode.UNKNOWN, StatusCode.INTERNAL, StatusCode.OK)
    assert status.status_message == exc.message
    # The table names every kind (or its parent) explicitly, so nothing maps by accident.
    assert any(issubclass(kind, row) for row, _ in grpc_errors._TABLE)


def test_the_error_tree_is_what_the_table_covers() -> None:
    # An adapter's refinement (redis_batch.LostReply) maps through its parent's row.
    for kind in _subclasses(errors.PaysimError)[1:]:
        assert any(issubclass(kind, row) for row, _ in grpc_errors._TABLE), kind
    names = {k.__name__ for k in DOMAIN_ERRORS} | {"PaysimError"}
    assert names == {
        "PaysimError",
        "InvalidArgument",
        "NotFound",
        "IdempotencyConflict",
        "FailedPrecondition",
        "IllegalTransition",
        "Overloaded",
        "Unavailable",
        "StoreUnavailable",
    }
