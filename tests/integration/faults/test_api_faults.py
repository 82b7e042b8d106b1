"""API-side faults seen by a stock grpcio client: per-call targeting, lost answers, rates."""

from __future__ import annotations

import collections
from typing import Any

import grpc
import pytest
import trio

from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from tests.grpc_helpers import assert_safe_details, call, create_request, payment_stub
from tests.integration.faults.conftest import chaos_settings

FAULT = "x-paysim-fault"


async def failing(method: Any, request: Any, fault: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        await call(method, request, metadata=[(FAULT, fault)])
    return info.value


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("unavailable", grpc.StatusCode.UNAVAILABLE),
        ("deadline_exceeded", grpc.StatusCode.DEADLINE_EXCEEDED),
        ("resource_exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("internal", grpc.StatusCode.INTERNAL),
    ],
)
async def test_a_header_forces_one_error_without_doing_the_work(app, admin, fault, code):
    with payment_stub(app.grpc_port) as stub:
        err = await failing(stub.CreatePaymentIntent, create_request(user_id="u_err"), fault)
        assert err.code() == code
        assert_safe_details(err.details())
        if fault == "resource_exhausted":
            trailers = dict(err.trailing_metadata())
            assert trailers["grpc-retry-pushback-ms"] == "1000"
            assert trailers["retry-after"] == "1"
        # Nothing was created, and the next call without the header is untouched.
        listed = await call(stub.ListPayments, pb.ListPaymentsRequest(user_id="u_err"))
        assert list(listed.payments) == []
        await call(stub.CreatePaymentIntent, create_request(user_id="u_err"))
    metrics = (await admin.get("/metrics")).text
    assert (
        f'paysim_api_faults_total{{code="{code.name}",kind="error_targeted",'
        f'rpc="CreatePaymentIntent"}} 1.0' in metrics
    )


async def test_a_lost_answer_leaves_a_payment_the_same_idempotency_key_returns(app, admin):
    with payment_stub(app.grpc_port) as stub:
        request = create_request(user_id="u_lost", idempotency_key="order-17")
        err = await failing(stub.CreatePaymentIntent, request, "lost_answer")
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        report = (await admin.get("/reconciliation")).json()
        assert report["lost_answers"]["count"] == 1
        assert report["lost_answers"]["unrecovered"] == 1
        # The work was done: the user has one payment, which the retry returns.
        listed = await call(stub.ListPayments, pb.ListPaymentsRequest(user_id="u_lost"))
        (payment,) = listed.payments
        again = await call(stub.CreatePaymentIntent, request)
        assert again.payment_intent_id == payment.payment_intent_id
        # A retry without the key makes a second payment.
        await call(stub.CreatePaymentIntent, create_request(user_id="u_lost"))
        listed = await call(stub.ListPayments, pb.ListPaymentsRequest(user_id="u_lost"))
        assert len(listed.payments) == 2
    report = (await admin.get("/reconciliation")).json()
    assert report["lost_answers"]["recovered"] == 1
    assert report["lost_answers"]["unrecovered_sample"] == []


async def test_a_reset_after_a_capture_is_a_double_charge_when_the_caller_starts_over(app, admin):
    card = pb.PaymentDetails(
        method=pb.PAYMENT_METHOD_CREDIT_CARD,
        credit_card=pb.CreditCardDetails(
            card_number="4242424242424242", expiry_month="12", expiry_year="2099", cvv="123"
        ),
    )
    with payment_stub(app.grpc_port) as stub:
        first = await call(stub.CreatePaymentIntent, create_request(reservation_id="rsv_dbl"))
        process = pb.ProcessPaymentRequest(
            payment_intent_id=first.payment_intent_id, payment_details=card
        )
        err = await failing(stub.ProcessPayment, process, "lost_answer_reset")
        assert err.code() == grpc.StatusCode.INTERNAL  # RST_STREAM(INTERNAL_ERROR)
        state = await call(
            stub.GetPaymentStatus,
            pb.GetPaymentStatusRequest(payment_intent_id=first.payment_intent_id),
        )
        assert state.payment.status == pb.PAYMENT_STATUS_COMPLETED  # the capture happened
        second = await call(stub.CreatePaymentIntent, create_request(reservation_id="rsv_dbl"))
        process = pb.ProcessPaymentRequest(
            payment_intent_id=second.payment_intent_id, payment_details=card
        )
        await call(stub.ProcessPayment, process)
    report = (await admin.get("/reconciliation")).json()
    doubles = report["double_charges"]
    assert doubles["reservations"] == 1
    assert doubles["sample"] == [
        {
            "reservation_id": "rsv_dbl",
            "payment_intent_ids": sorted([first.payment_intent_id, second.payment_intent_id]),
        }
    ]
    # GetPaymentStatus about the same intent answered: the lost answer is recovered.
    assert report["lost_answers"]["recovered"] == 1
    assert "paysim_reconciliation_double_charges 1.0" in (await admin.get("/metrics")).text


async def test_an_unknown_targeted_fault_is_invalid_argument(app):
    with payment_stub(app.grpc_port) as stub:
        err = await failing(stub.GetPaymentStatus, pb.GetPaymentStatusRequest(), "nonsense")
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert FAULT in err.details()


CALLS = 2_000


def _codes(port: int, n: int) -> collections.Counter[str]:
    """``n`` ListPayments calls in flight together (grpcio futures); their codes."""
    with payment_stub(port) as stub:
        request = pb.ListPaymentsRequest(user_id="u_rates")
        futures = [stub.ListPayments.future(request, timeout=30) for _ in range(n)]
        return collections.Counter(f.code().name for f in futures)


async def test_observed_rates_match_the_plan_and_the_metrics(start_app):
    rates = {"error_rate": 0.2, "lost_answer_rate": 0.1}
    plan = {"rpcs": {"ListPayments": {**rates, "error_codes": {"unavailable": 1, "internal": 1}}}}
    handle = await start_app(chaos_settings(plan))
    codes = await trio.to_thread.run_sync(_codes, handle.grpc_port, CALLS)
    assert sum(codes.values()) == CALLS
    # Each share within 5 standard deviations of its binomial expectation.
    # UNAVAILABLE: half the errors, and every lost answer (the work was done).
    for code, p in (("INTERNAL", 0.1), ("UNAVAILABLE", 0.2), ("OK", 0.7)):
        bound = 5 * (CALLS * p * (1 - p)) ** 0.5
        assert abs(codes[code] - CALLS * p) < bound, (code, codes)
    # The metrics count exactly what the client saw.
    text = handle.running.metrics.render()[0].decode()
    values = {}
    for kind, code in (
        ("error", "INTERNAL"),
        ("error", "UNAVAILABLE"),
        ("lost_answer", "UNAVAILABLE"),
    ):
        prefix = f'paysim_api_faults_total{{code="{code}",kind="{kind}",rpc="ListPayments"}} '
        (line,) = [x for x in text.splitlines() if x.startswith(prefix)]
        values[kind, code] = float(line.removeprefix(prefix))
    assert values["error", "INTERNAL"] == codes["INTERNAL"]
    assert (
        values["error", "UNAVAILABLE"] + values["lost_answer", "UNAVAILABLE"]
        == codes["UNAVAILABLE"]
    )
    assert values["lost_answer", "UNAVAILABLE"] > 0
