"""CancelPayment, ListPayments, SimulateWebhook and test cards, through a stock grpcio client.

A real app on loopback (the ``app``/``stub`` fixtures); announced changes are
read from the app's recording notifier. Every error case checks the code and
that the message is actionable and leaks nothing (``call_error``).
"""

from __future__ import annotations

import io
import json
from typing import Any

import grpc
import pytest
import structlog

from paysim._proto.proto.common.v1.types_pb2 import Money, Pagination
from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim.domain import forced_outcomes
from paysim.domain.events import event_detail, webhook_body
from paysim.domain.models import PaymentStatus
from paysim.observability import logging as paysim_logging
from tests.grpc_helpers import call, call_error, create_request, krw

Code = grpc.StatusCode
S = PaymentStatus


async def create(stub: Any, **fields: Any) -> str:
    return str((await call(stub.CreatePaymentIntent, create_request(**fields))).payment_intent_id)


async def get(stub: Any, pid: str) -> Any:
    request = pb.GetPaymentStatusRequest(payment_intent_id=pid)
    return (await call(stub.GetPaymentStatus, request)).payment


async def process(stub: Any, pid: str, card: str = "") -> Any:
    details = pb.PaymentDetails(
        method=pb.PAYMENT_METHOD_CREDIT_CARD,
        credit_card=pb.CreditCardDetails(card_number=card, cvv="123") if card else None,
    )
    request = pb.ProcessPaymentRequest(payment_intent_id=pid, payment_details=details)
    return await call(stub.ProcessPayment, request)


async def completed(stub: Any, **fields: Any) -> str:
    pid = await create(stub, scenario=pb.PAYMENT_SCENARIO_APPROVE, **fields)
    assert (await process(stub, pid)).status == pb.PAYMENT_STATUS_COMPLETED
    return pid


def cancel_request(pid: str, **fields: Any) -> Any:
    return pb.CancelPaymentRequest(payment_intent_id=pid, **fields)


async def cancel(stub: Any, pid: str, **fields: Any) -> Any:
    return await call(stub.CancelPayment, cancel_request(pid, **fields))


# -- CancelPayment: cancel ------------------------------------------------------------


async def test_cancel_a_pending_payment_stops_its_timer(app, stub):
    pid = await create(stub, webhook_url="https://example.com/hook")
    assert app.running.simulator.is_scheduled(pid)
    resp = await cancel(stub, pid, reason="customer changed their mind")
    assert resp.status == pb.PAYMENT_STATUS_CANCELLED
    assert resp.HasField("cancelled_at")
    assert not resp.refund_id
    assert not resp.HasField("refunded_amount")
    assert not app.running.simulator.is_scheduled(pid)  # no outcome can follow
    payment = await get(stub, pid)
    assert payment.status == pb.PAYMENT_STATUS_CANCELLED
    assert payment.cancellation_reason == "customer changed their mind"
    assert payment.cancelled_at == resp.cancelled_at
    [change] = app.notifier.for_payment(pid)
    assert (change.previous, change.payment.status) == (S.PENDING, S.CANCELLED)
    assert change.payment.cancellation_reason == "customer changed their mind"


async def test_cancel_a_processing_payment(app, stub):
    pid = await create(stub, scenario=pb.PAYMENT_SCENARIO_TIMEOUT)
    assert (await process(stub, pid)).status == pb.PAYMENT_STATUS_PROCESSING
    resp = await cancel(stub, pid, reason="gave up waiting")
    assert resp.status == pb.PAYMENT_STATUS_CANCELLED
    assert not app.running.simulator.is_scheduled(pid)


async def test_a_refund_amount_for_an_uncaptured_payment_is_refused(stub):
    pid = await create(stub)
    err = await call_error(stub.CancelPayment, cancel_request(pid, refund_amount=krw(1_000)))
    assert err.code() == Code.FAILED_PRECONDITION
    assert "PENDING" in err.details()
    assert "refund_amount" in err.details()
    assert (await get(stub, pid)).status == pb.PAYMENT_STATUS_PENDING


# -- CancelPayment: refunds -------------------------------------------------------------


async def test_a_full_refund(app, stub):
    pid = await completed(stub, amount=krw(50_000))
    resp = await cancel(stub, pid, reason="event cancelled")
    assert resp.status == pb.PAYMENT_STATUS_REFUNDED
    assert resp.refunded_amount == krw(50_000)
    assert resp.refund_id.startswith("re_")
    payment = await get(stub, pid)
    assert payment.status == pb.PAYMENT_STATUS_REFUNDED
    assert payment.refunded_amount == krw(50_000)
    change = app.notifier.for_payment(pid)[-1]
    assert change.payment.status is S.REFUNDED
    assert change.refund is not None
    assert change.refund.refund_id == resp.refund_id
    assert change.refund.reason == "event cancelled"


async def test_partial_refunds_accumulate_and_the_last_one_refunds(app, stub):
    pid = await completed(stub, amount=krw(50_000))
    first = await cancel(stub, pid, refund_amount=krw(30_000), reason="one seat")
    assert first.status == pb.PAYMENT_STATUS_COMPLETED  # partly refunded: still COMPLETED
    assert first.refunded_amount == krw(30_000)
    payment = await get(stub, pid)
    assert payment.status == pb.PAYMENT_STATUS_COMPLETED
    assert payment.refunded_amount == krw(30_000)
    second = await cancel(stub, pid, refund_amount=krw(20_000), reason="the other seat")
    assert second.status == pb.PAYMENT_STATUS_REFUNDED
    assert second.refunded_amount == krw(50_000)
    assert second.refund_id != first.refund_id
    refunds = [c for c in app.notifier.for_payment(pid) if c.refund is not None]
    assert [(c.payment.status, c.payment.refunded) for c in refunds] == [
        (S.COMPLETED, 30_000),
        (S.REFUNDED, 50_000),
    ]


@pytest.mark.parametrize(
    ("amount", "field"),
    [
        (krw(50_001), "refund_amount.amount"),
        (Money(amount=100, currency="USD"), "refund_amount.currency"),
        (krw(0), "refund_amount.amount"),
        (Money(amount=100, currency="won"), "refund_amount.currency"),
    ],
)
async def test_a_refund_it_cannot_make_is_invalid_argument(stub, amount, field):
    pid = await completed(stub, amount=krw(50_000))
    err = await call_error(stub.CancelPayment, cancel_request(pid, refund_amount=amount))
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in err.details()
    assert not (await get(stub, pid)).HasField("refunded_amount")


async def test_more_than_the_remainder_after_a_partial_refund(stub):
    pid = await completed(stub, amount=krw(50_000))
    await cancel(stub, pid, refund_amount=krw(40_000))
    err = await call_error(stub.CancelPayment, cancel_request(pid, refund_amount=krw(10_001)))
    assert err.code() == Code.INVALID_ARGUMENT
    assert "10000 KRW" in err.details()


async def _failed(stub: Any) -> str:
    pid = await create(stub, scenario=pb.PAYMENT_SCENARIO_FAIL)
    await process(stub, pid)
    return pid


async def _cancelled(stub: Any) -> str:
    pid = await create(stub)
    await cancel(stub, pid)
    return pid


async def _expired(stub: Any) -> str:
    pid = await create(stub)
    request = pb.SimulateWebhookRequest(
        payment_intent_id=pid, target_status=pb.PAYMENT_STATUS_EXPIRED
    )
    await call(stub.SimulateWebhook, request)
    return pid


async def _refunded(stub: Any) -> str:
    pid = await completed(stub)
    await cancel(stub, pid)
    return pid


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (_failed, "FAILED"),
        (_cancelled, "CANCELLED"),
        (_expired, "EXPIRED"),
        (_refunded, "REFUNDED"),
    ],
)
async def test_a_final_payment_cannot_be_cancelled(stub, make, status):
    pid = await make(stub)
    assert (await get(stub, pid)).status == pb.PaymentStatus.Value(f"PAYMENT_STATUS_{status}")
    err = await call_error(stub.CancelPayment, cancel_request(pid, reason="again"))
    assert err.code() == Code.FAILED_PRECONDITION
    assert f"payment is {status}" in err.details()


async def test_cancel_an_unknown_payment_is_not_found(stub):
    err = await call_error(stub.CancelPayment, cancel_request("pay_nope"))
    assert err.code() == Code.NOT_FOUND
    assert "not found" in err.details()


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.CancelPaymentRequest(), "payment_intent_id"),
        (cancel_request("pay_x", reason="r" * 513), "reason"),
        (cancel_request("pay_x", idempotency_key="k" * 256), "idempotency_key"),
    ],
)
async def test_cancel_validates_its_fields(stub, request_, field):
    err = await call_error(stub.CancelPayment, request_)
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in err.details()


# -- CancelPayment: idempotency ---------------------------------------------------------


async def test_a_retried_refund_returns_the_first_answer_and_refunds_once(app, stub):
    pid = await completed(stub, amount=krw(50_000))
    first = await cancel(stub, pid, refund_amount=krw(10_000), idempotency_key="refund-1")
    again = await cancel(stub, pid, refund_amount=krw(10_000), idempotency_key="refund-1")
    assert again == first
    assert (await get(stub, pid)).refunded_amount == krw(10_000)
    assert len([c for c in app.notifier.for_payment(pid) if c.refund]) == 1
    # A new key is a new refund.
    third = await cancel(stub, pid, refund_amount=krw(10_000), idempotency_key="refund-2")
    assert third.refunded_amount == krw(20_000)


async def test_a_retried_cancel_returns_the_first_answer(stub):
    pid = await create(stub)
    first = await cancel(stub, pid, reason="r", idempotency_key="c-1")
    assert await cancel(stub, pid, reason="r", idempotency_key="c-1") == first


async def test_the_same_key_with_other_parameters_is_a_conflict(stub):
    pid = await completed(stub, amount=krw(50_000))
    await cancel(stub, pid, refund_amount=krw(10_000), idempotency_key="k")
    request = cancel_request(pid, refund_amount=krw(20_000), idempotency_key="k")
    err = await call_error(stub.CancelPayment, request)
    assert err.code() == Code.ALREADY_EXISTS
    assert "conflict" in err.details()
    assert (await get(stub, pid)).refunded_amount == krw(10_000)


async def test_a_failed_cancel_gives_its_key_back(stub):
    pid = await completed(stub, amount=krw(50_000))
    too_much = cancel_request(pid, refund_amount=krw(60_000), idempotency_key="k")
    assert (await call_error(stub.CancelPayment, too_much)).code() == Code.INVALID_ARGUMENT
    fixed = await cancel(stub, pid, refund_amount=krw(60_000 - 10_000), idempotency_key="k")
    assert fixed.status == pb.PAYMENT_STATUS_REFUNDED


# -- ListPayments ---------------------------------------------------------------------


def list_request(user_id: str = "user_1", **fields: Any) -> Any:
    return pb.ListPaymentsRequest(user_id=user_id, **fields)


async def list_page(stub: Any, user_id: str = "user_1", **fields: Any) -> Any:
    return await call(stub.ListPayments, list_request(user_id, **fields))


async def test_list_newest_first_with_default_page_size(stub):
    ids = [await create(stub, reservation_id=f"rsv_{i}") for i in range(23)]
    await create(stub, user_id="someone_else")
    page = await list_page(stub)
    assert [p.payment_intent_id for p in page.payments] == ids[::-1][:20]
    info = page.page_info
    assert (info.total_count, info.has_next_page, info.has_previous_page) == (23, True, False)
    assert info.next_cursor
    assert not info.previous_cursor
    rest = await list_page(stub, pagination=Pagination(cursor=info.next_cursor))
    assert [p.payment_intent_id for p in rest.payments] == ids[::-1][20:]
    assert (rest.page_info.has_next_page, rest.page_info.has_previous_page) == (False, True)
    back = await list_page(stub, pagination=Pagination(cursor=rest.page_info.previous_cursor))
    assert [p.payment_intent_id for p in back.payments] == ids[::-1][:20]


async def test_cursor_pages_stay_correct_while_payments_arrive(stub):
    ids = [await create(stub) for _ in range(10)]
    seen: list[str] = []
    cursor = ""
    while True:
        page = await list_page(stub, pagination=Pagination(page_size=3, cursor=cursor))
        seen += [p.payment_intent_id for p in page.payments]
        await create(stub)  # a newer payment arrives between pages
        if not page.page_info.has_next_page:
            break
        cursor = page.page_info.next_cursor
    assert seen == ids[::-1]


async def test_page_numbers(stub):
    ids = [await create(stub) for _ in range(7)]
    page = await list_page(stub, pagination=Pagination(page=3, page_size=3))
    assert [p.payment_intent_id for p in page.payments] == ids[::-1][6:]
    assert (page.page_info.has_next_page, page.page_info.has_previous_page) == (False, True)


async def test_list_filters(stub):
    done = await completed(stub, reservation_id="rsv_a")
    pending = await create(stub, reservation_id="rsv_a")
    other = await create(stub, reservation_id="rsv_b")
    by_status = await list_page(stub, status=pb.PAYMENT_STATUS_PENDING)
    assert [p.payment_intent_id for p in by_status.payments] == [other, pending]
    by_reservation = await list_page(stub, reservation_id="rsv_a")
    assert [p.payment_intent_id for p in by_reservation.payments] == [pending, done]
    both = await list_page(stub, reservation_id="rsv_a", status=pb.PAYMENT_STATUS_COMPLETED)
    assert [p.payment_intent_id for p in both.payments] == [done]
    assert both.page_info.total_count == 1
    assert (await list_page(stub, user_id="nobody")).page_info.total_count == 0


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListPaymentsRequest(), "user_id"),
        (list_request(pagination=Pagination(page_size=101)), "pagination.page_size"),
        (list_request(pagination=Pagination(page_size=-1)), "pagination.page_size"),
        (list_request(pagination=Pagination(page=-2)), "pagination.page"),
        (list_request(pagination=Pagination(cursor="bm90IGEgY3Vyc29y")), "pagination.cursor"),
        (list_request(pagination=Pagination(cursor="%%%")), "pagination.cursor"),
        (list_request(status=42), "status"),
    ],
)
async def test_list_validates_its_fields(stub, request_, field):
    err = await call_error(stub.ListPayments, request_)
    assert err.code() == Code.INVALID_ARGUMENT
    assert field in err.details()


async def test_page_size_100_is_allowed(stub):
    await create(stub)
    page = await list_page(stub, pagination=Pagination(page_size=100))
    assert page.page_info.total_count == 1


# -- SimulateWebhook ------------------------------------------------------------------


def simulate_request(pid: str, **fields: Any) -> Any:
    return pb.SimulateWebhookRequest(payment_intent_id=pid, **fields)


async def simulate(stub: Any, pid: str, **fields: Any) -> Any:
    return await call(stub.SimulateWebhook, simulate_request(pid, **fields))


async def test_a_resend_announces_the_current_state_under_a_new_id(app, stub):
    pid = await completed(stub, webhook_url="https://example.com/hook")
    before = app.notifier.for_payment(pid)[-1]
    resp = await simulate(stub, pid)
    assert resp.webhook_sent
    assert resp.webhook_id.startswith("evt_")
    assert resp.webhook_id != before.event_id
    assert resp.HasField("scheduled_at")
    resent = app.notifier.for_payment(pid)[-1]
    assert resent.event_id == resp.webhook_id
    assert resent.resend
    assert resent.payment == before.payment


async def test_without_a_webhook_url_nothing_is_sent_but_the_event_is(app, stub):
    pid = await create(stub)
    resp = await simulate(stub, pid)
    assert not resp.webhook_sent
    assert app.notifier.for_payment(pid)[-1].event_id == resp.webhook_id


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (pb.PAYMENT_STATUS_COMPLETED, S.COMPLETED),
        (pb.PAYMENT_STATUS_FAILED, S.FAILED),
        (pb.PAYMENT_STATUS_EXPIRED, S.EXPIRED),
        (pb.PAYMENT_STATUS_CANCELLED, S.CANCELLED),
        (pb.PAYMENT_STATUS_PROCESSING, S.PROCESSING),
    ],
)
async def test_drive_a_pending_payment_to_a_legal_target(app, stub, target, status):
    pid = await create(stub, webhook_url="https://example.com/hook")
    resp = await simulate(stub, pid, target_status=target)
    assert resp.webhook_sent
    change = app.notifier.for_payment(pid)[-1]
    assert (change.event_id, change.payment.status) == (resp.webhook_id, status)
    assert (await get(stub, pid)).status == target
    # A final status ends the timer; PROCESSING keeps it (the PG still answers).
    assert app.running.simulator.is_scheduled(pid) is (status is S.PROCESSING)


async def test_drive_a_completed_payment_to_refunded(stub):
    pid = await completed(stub, amount=krw(50_000))
    await simulate(stub, pid, target_status=pb.PAYMENT_STATUS_REFUNDED)
    payment = await get(stub, pid)
    assert payment.status == pb.PAYMENT_STATUS_REFUNDED
    assert payment.refunded_amount == krw(50_000)


@pytest.mark.parametrize(
    "target", [pb.PAYMENT_STATUS_PENDING, pb.PAYMENT_STATUS_FAILED, pb.PAYMENT_STATUS_CANCELLED]
)
async def test_an_illegal_target_is_failed_precondition(stub, target):
    pid = await completed(stub)
    err = await call_error(stub.SimulateWebhook, simulate_request(pid, target_status=target))
    assert err.code() == Code.FAILED_PRECONDITION
    assert "payment is COMPLETED" in err.details()


async def test_a_delayed_simulation_is_scheduled_and_dies_with_its_payment(app, stub):
    pid = await create(stub, webhook_url="https://example.com/hook")
    resp = await simulate(stub, pid, delay_seconds=60, target_status=pb.PAYMENT_STATUS_COMPLETED)
    assert not resp.webhook_sent
    payment = await get(stub, pid)
    scheduled_in = resp.scheduled_at.ToNanoseconds() - payment.created_at.ToNanoseconds()
    assert 60e9 <= scheduled_in < 70e9
    assert app.running.simulator.scheduled_extras(pid) == 1
    await cancel(stub, pid)
    assert app.running.simulator.scheduled_extras(pid) == 0


async def test_force_trigger_sends_now_whatever_the_delay(app, stub):
    pid = await create(stub, webhook_url="https://example.com/hook")
    resp = await simulate(stub, pid, delay_seconds=60, force_trigger=True)
    assert resp.webhook_sent
    assert app.notifier.for_payment(pid)[-1].event_id == resp.webhook_id
    assert app.running.simulator.scheduled_extras(pid) == 0


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (pb.SimulateWebhookRequest(), Code.INVALID_ARGUMENT, "payment_intent_id"),
        (simulate_request("pay_x", delay_seconds=-1), Code.INVALID_ARGUMENT, "delay_seconds"),
        (simulate_request("pay_x", delay_seconds=10**6), Code.INVALID_ARGUMENT, "delay_seconds"),
        (simulate_request("pay_x", target_status=99), Code.INVALID_ARGUMENT, "target_status"),
        (simulate_request("pay_nope"), Code.NOT_FOUND, "not found"),
    ],
)
async def test_simulate_validates_its_fields(stub, request_, code, words):
    err = await call_error(stub.SimulateWebhook, request_)
    assert err.code() == code
    assert words in err.details()


# -- test cards and magic values --------------------------------------------------------


@pytest.mark.parametrize(("card", "name"), sorted(forced_outcomes.CARDS.items()))
async def test_a_test_card_forces_its_outcome(app, stub, card, name):
    pid = await create(stub, scenario=pb.PAYMENT_SCENARIO_APPROVE)
    resp = await process(stub, pid, card=card)
    forced = forced_outcomes.OUTCOMES[name]
    if forced.status is S.EXPIRED:  # the PG never answers: PROCESSING until expiry
        assert resp.status == pb.PAYMENT_STATUS_PROCESSING
        assert app.running.simulator.is_scheduled(pid)
        return
    assert resp.status == int(forced.status)
    assert resp.result.failure_reason == forced.failure_reason
    assert resp.result.response_code == forced.response_code
    assert resp.result.gateway_response == forced.gateway_response


async def test_another_card_keeps_the_outcome_decided_at_creation(stub):
    pid = await create(stub, scenario=pb.PAYMENT_SCENARIO_FAIL)
    resp = await process(stub, pid, card="5555555555554444")
    assert resp.status == pb.PAYMENT_STATUS_FAILED


async def test_the_test_outcome_tag_decides_at_creation(stub):
    metadata = pb.PaymentMetadata(tags={"test_outcome": "insufficient_funds"})
    pid = await create(stub, scenario=pb.PAYMENT_SCENARIO_APPROVE, metadata=metadata)
    resp = await process(stub, pid)
    assert resp.status == pb.PAYMENT_STATUS_FAILED
    assert (resp.result.failure_reason, resp.result.response_code) == ("insufficient_funds", 51)


async def test_an_unknown_test_outcome_is_invalid_argument(stub):
    metadata = pb.PaymentMetadata(tags={"test_outcome": "maybe"})
    err = await call_error(stub.CreatePaymentIntent, create_request(metadata=metadata))
    assert err.code() == Code.INVALID_ARGUMENT
    assert "test_outcome" in err.details()
    assert "insufficient_funds" in err.details()


async def test_card_numbers_never_reach_logs_or_webhooks(app, stub):
    out = io.StringIO()
    paysim_logging.configure(level="debug", json=True, stream=out)
    structlog.configure(cache_logger_on_first_use=False)  # no logger keeps this stream
    try:
        pid = await create(stub, webhook_url="https://example.com/hook")
        await process(stub, pid, card="4000000000009995")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "4000000000009995" not in text
    assert '"123"' not in text
    assert "****9995" in text  # the last four, to tell test cards apart in the log
    for change in app.notifier.for_payment(pid):
        assert b"400000" not in webhook_body(change)
        assert "400000" not in json.dumps(event_detail(change))
    metrics, _ = app.running.metrics.render()
    assert b"4000000000009995" not in metrics
