"""/admin/faults changes faults live; /reconciliation counts a naive caller's double charges."""

from __future__ import annotations

import collections
import functools
from typing import Any

import grpc
import httpx
import pytest
import trio

from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from tests.grpc_helpers import call, create_request, payment_stub
from tests.integration.faults.conftest import chaos_settings

JSON = {"content-type": "application/json"}
CARD = pb.PaymentDetails(
    method=pb.PAYMENT_METHOD_CREDIT_CARD,
    credit_card=pb.CreditCardDetails(
        card_number="4242424242424242", expiry_month="12", expiry_year="2099", cvv="123"
    ),
)


async def test_a_plan_put_live_applies_to_the_next_call(app, admin):
    plan = {"rpcs": {"ListPayments": {"error_rate": 1.0, "error_codes": {"internal": 1}}}}
    answer = await admin.put("/admin/faults", json={"plan": plan}, headers=JSON)
    assert answer.status_code == 200
    assert answer.json()["plan"]["rpcs"]["ListPayments"]["error_rate"] == 1.0
    with payment_stub(app.grpc_port) as stub:
        with pytest.raises(grpc.RpcError) as info:
            await call(stub.ListPayments, pb.ListPaymentsRequest(user_id="u"))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        await admin.put("/admin/faults", json={"plan": {}}, headers=JSON)
        await call(stub.ListPayments, pb.ListPaymentsRequest(user_id="u"))


async def test_a_timeline_started_through_the_endpoint_is_visible(app, admin):
    answer = await admin.put("/admin/faults", json={"timeline": "ticket_on_sale"}, headers=JSON)
    state = answer.json()
    assert state["timeline"]["name"] == "ticket-on-sale"
    assert state["timeline"]["phase"] == "queue-opens"
    assert state["plan"]["rpcs"]["*"]["latency"]["p99_ms"] == 2000
    metrics = (await admin.get("/metrics")).text
    assert 'paysim_api_fault_phase{phase="queue-opens",timeline="ticket-on-sale"} 1.0' in metrics
    state = (await admin.put("/admin/faults", json={"timeline": None}, headers=JSON)).json()
    assert state["timeline"] is None
    assert state["plan"] == {"rpcs": {}}


async def test_changes_are_refused_cross_site_without_json_or_when_malformed(app, admin):
    before = (await admin.get("/admin/faults")).json()
    plan = {"plan": {"rpcs": {"*": {"error_rate": 1.0}}}}
    refused = [
        await admin.put("/admin/faults", json=plan, headers={"content-type": "text/plain"}),
        await admin.put("/admin/faults", json=plan, headers={**JSON, "origin": "http://evil"}),
        await admin.put(
            "/admin/faults", json=plan, headers={**JSON, "sec-fetch-site": "cross-site"}
        ),
        await admin.put("/admin/faults", content=b"{", headers=JSON),
        await admin.put(
            "/admin/faults", json={"plan": {"rpcs": {"*": {"error_rate": 2}}}}, headers=JSON
        ),
        await admin.put("/admin/faults", json={"timeline": "nope"}, headers=JSON),
    ]
    assert [r.status_code for r in refused] == [415, 403, 403, 400, 400, 400]
    assert "rpcs.*.error_rate" in refused[4].json()["error"]
    assert (await admin.get("/admin/faults")).json() == before


def naive_caller(port: int, reservations: int) -> collections.Counter[str]:
    """No idempotency key; any failure starts the payment over. Returns the codes it met."""
    met: collections.Counter[str] = collections.Counter()
    with payment_stub(port) as stub:
        for r in range(reservations):
            while True:
                try:
                    intent = stub.CreatePaymentIntent(
                        create_request(reservation_id=f"rsv_{r}", user_id="naive"), timeout=10
                    )
                    stub.ProcessPayment(
                        pb.ProcessPaymentRequest(
                            payment_intent_id=intent.payment_intent_id, payment_details=CARD
                        ),
                        timeout=10,
                    )
                    break
                except grpc.RpcError as exc:
                    met[exc.code().name] += 1
    return met


def correct_caller(port: int, reservations: int) -> collections.Counter[str]:
    """One idempotency key per reservation; retries the same intent's capture."""
    met: collections.Counter[str] = collections.Counter()
    with payment_stub(port) as stub:
        for r in range(reservations):
            request = create_request(
                reservation_id=f"rsv_{r}", user_id="correct", idempotency_key=f"rsv_{r}"
            )
            intent = _retry(functools.partial(stub.CreatePaymentIntent, request, timeout=10), met)
            process = pb.ProcessPaymentRequest(
                payment_intent_id=intent.payment_intent_id, payment_details=CARD
            )
            _retry(functools.partial(stub.ProcessPayment, process, timeout=10), met)
    return met


def _retry(fn: Any, met: collections.Counter[str]) -> Any:
    while True:
        try:
            return fn()
        except grpc.RpcError as exc:
            met[exc.code().name] += 1


# Errors are UNAVAILABLE (no work done); lost answers are resets (INTERNAL to grpcio),
# so the test knows exactly which failed captures went through.
STORM = {
    "CreatePaymentIntent": {"error_rate": 0.1, "lost_answer_rate": 0.05},
    "ProcessPayment": {"error_rate": 0.1, "lost_answer_rate": 0.1, "lost_answer_mode": "reset"},
}
RESERVATIONS = 300


async def test_the_report_counts_a_naive_callers_double_charges_exactly(start_app):
    handle = await start_app(chaos_settings({"rpcs": STORM}))
    met = await trio.to_thread.run_sync(naive_caller, handle.grpc_port, RESERVATIONS)
    rec = await _report(handle)
    # Every reset capture was followed by a fresh payment that completed.
    assert met["INTERNAL"] > 0
    assert rec["double_charges"]["extra_captures"] == met["INTERNAL"]
    lost_creates = rec["lost_answers"]["by_rpc"]["CreatePaymentIntent"]
    assert lost_creates["recovered"] == 0  # without a key nothing brings them back
    assert rec["lost_answers"]["by_rpc"]["ProcessPayment"]["lost"] == met["INTERNAL"]


async def test_the_report_finds_no_double_charge_for_a_correct_caller(start_app):
    handle = await start_app(chaos_settings({"rpcs": STORM}))
    met = await trio.to_thread.run_sync(correct_caller, handle.grpc_port, RESERVATIONS)
    rec = await _report(handle)
    assert met["INTERNAL"] > 0
    assert met["UNAVAILABLE"] > 0
    assert rec["double_charges"]["reservations"] == 0
    assert rec["lost_answers"]["count"] > 0
    assert rec["lost_answers"]["unrecovered"] == 0  # every retry recovered its answer


async def _report(handle: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.get(f"http://127.0.0.1:{handle.http_port}/reconciliation")
    return answer.json()  # type: ignore[no-any-return]
