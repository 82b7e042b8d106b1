"""Issue 17 at the scale it asks for: 10,000 stock grpcio calls per RPC and lost-answer mode.

One app per lost-answer mode (``unavailable``, ``reset``); in it, through
``PUT /admin/faults``:

1. CreatePaymentIntent under the plan ``RULE`` (every error code and lost
   answers): 10,000 calls, each with its own user and idempotency key;
2. the faults off: every lost creation is retried with its key and must return
   the payment the lost call made (the user's only payment); a sample of the
   failed ones must have made none;
3. ProcessPayment under the same plan: 10,000 captures of distinct PENDING
   intents (those from step 1, topped up without faults);
4. the faults off: every lost capture happened (COMPLETED) and a retry returns
   it unchanged; the failed ones (every tenth) left their intents PENDING.

Each observed share is within 5 binomial standard deviations of the plan's
(for p = 0.05 over 10,000 calls: ±109 calls around 500), the counter
``paysim_api_faults_total`` equals what the client saw for every kind, and the
reconciliation report recovered every lost answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim.chaos.caller import CARD
from paysim.config import Settings
from tests.grpc_helpers import create_request, payment_stub
from tests.integration.faults.many_calls import (
    Outcome,
    classify,
    fault_counts,
    fire,
    held_settings,
    quiet_logs,
    tally,
    within_binomial,
)

CALLS = 10_000
CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL")
ERROR_RATE = 0.2  # split evenly over the four codes: 0.05 each
LOST_RATE = 0.1
RETRY_AFTER_MS = 250


@pytest.fixture
def settings() -> Settings:
    return held_settings()


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    yield from quiet_logs()


def rule(mode: str) -> dict[str, Any]:
    return {
        "error_rate": ERROR_RATE,
        "error_codes": {code.lower(): 1 for code in CODES},
        "retry_after_ms": RETRY_AFTER_MS,
        "lost_answer_rate": LOST_RATE,
        "lost_answer_mode": mode,
    }


def expected_shares(mode: str) -> dict[str, float]:
    shares = {f"error:{code}": ERROR_RATE / len(CODES) for code in CODES}
    shares["lost:" + ("RESET" if mode == "reset" else "UNAVAILABLE")] = LOST_RATE
    shares["ok"] = 1 - ERROR_RATE - LOST_RATE
    return shares


def check_rates(outcomes: list[Outcome], mode: str, metrics_text: str, rpc: str) -> Counter[str]:
    seen = tally(outcomes)
    assert sum(seen.values()) == CALLS
    shares = expected_shares(mode)
    assert set(seen) == set(shares), seen  # nothing else reached the client
    for kind, p in shares.items():
        assert within_binomial(seen[kind], CALLS, p), (rpc, kind, seen[kind], CALLS * p)
    # The server counted exactly what the client saw, kind by kind.
    counted = fault_counts(metrics_text, rpc)
    assert counted == Counter({k: v for k, v in seen.items() if k != "ok"}), (counted, seen)
    # RESOURCE_EXHAUSTED carries its pushback, in both spellings.
    for o in outcomes:
        if o.code == "RESOURCE_EXHAUSTED":
            assert o.trailers["grpc-retry-pushback-ms"] == str(RETRY_AFTER_MS)
            assert o.trailers["retry-after"] == "1"
    return seen


def indices(outcomes: list[Outcome], prefix: str) -> list[int]:
    return [i for i, o in enumerate(outcomes) if classify(o).startswith(prefix)]


async def set_plan(admin: Any, rpcs: dict[str, Any]) -> None:
    answer = await admin.put("/admin/faults", json={"plan": {"rpcs": rpcs}})
    assert answer.status_code == 200, answer.text


async def in_thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


@pytest.mark.parametrize("mode", ["unavailable", "reset"])
async def test_each_fault_kind_at_its_rate_over_10000_calls_per_rpc(app, admin, mode):
    with payment_stub(app.grpc_port) as stub:
        intents = await creations(stub, admin, app, mode)
        await captures(stub, admin, app, mode, intents)
    report = (await admin.get("/reconciliation")).json()["lost_answers"]
    # Every lost answer, on both RPCs, was recovered by the retries above.
    assert report["unrecovered"] == 0
    assert report["recovered"] == report["count"]


async def creations(stub: Any, admin: Any, handle: Any, mode: str) -> list[str]:
    """Step 1 and 2 (module docstring); the ids of the PENDING intents made."""
    requests = [
        create_request(
            reservation_id=f"rsv_{mode}_{i}",
            user_id=f"u_{mode}_{i}",
            idempotency_key=f"key_{mode}_{i}",
        )
        for i in range(CALLS)
    ]
    await set_plan(admin, {"CreatePaymentIntent": rule(mode)})
    outcomes = await in_thread(fire, stub.CreatePaymentIntent, requests)
    await set_plan(admin, {})
    check_rates(outcomes, mode, metrics(handle), "CreatePaymentIntent")

    # A lost answer left a payment: the same key returns it, and it is the user's only one.
    lost = indices(outcomes, "lost:")
    retried = await in_thread(fire, stub.CreatePaymentIntent, [requests[i] for i in lost])
    assert {o.code for o in retried} == {"OK"}
    listed = await in_thread(
        fire, stub.ListPayments, [pb.ListPaymentsRequest(user_id=requests[i].user_id) for i in lost]
    )
    for again, found in zip(retried, listed, strict=True):
        assert [p.payment_intent_id for p in found.response.payments] == [
            again.response.payment_intent_id
        ]
    # A failed call did no work (a sample of each code).
    failed = indices(outcomes, "error:")[::10]
    listed = await in_thread(
        fire,
        stub.ListPayments,
        [pb.ListPaymentsRequest(user_id=requests[i].user_id) for i in failed],
    )
    assert all(list(o.response.payments) == [] for o in listed)

    made = [o.response.payment_intent_id for o in outcomes if o.code == "OK"]
    made += [o.response.payment_intent_id for o in retried]
    assert len(set(made)) == len(made)
    top_up = [create_request(user_id=f"u_{mode}_more_{i}") for i in range(CALLS - len(made))]
    made += [
        o.response.payment_intent_id
        for o in await in_thread(fire, stub.CreatePaymentIntent, top_up)
    ]
    return made


async def captures(stub: Any, admin: Any, handle: Any, mode: str, intents: list[str]) -> None:
    """Steps 3 and 4 (module docstring)."""
    requests = [
        pb.ProcessPaymentRequest(payment_intent_id=i, payment_details=CARD, idempotency_key=i)
        for i in intents
    ]
    await set_plan(admin, {"ProcessPayment": rule(mode)})
    outcomes = await in_thread(fire, stub.ProcessPayment, requests)
    await set_plan(admin, {})
    check_rates(outcomes, mode, metrics(handle), "ProcessPayment")
    assert all(o.response.status == pb.PAYMENT_STATUS_COMPLETED for o in outcomes if o.code == "OK")

    def statuses(picked: list[int]) -> list[Any]:
        asks = [pb.GetPaymentStatusRequest(payment_intent_id=intents[i]) for i in picked]
        return [o.response.payment for o in fire(stub.GetPaymentStatus, asks)]

    # A lost capture happened, and the retry returns that very capture.
    lost = indices(outcomes, "lost:")
    before = await in_thread(statuses, lost)
    assert {p.status for p in before} == {pb.PAYMENT_STATUS_COMPLETED}
    retried = await in_thread(fire, stub.ProcessPayment, [requests[i] for i in lost])
    for payment, again in zip(before, retried, strict=True):
        assert again.code == "OK"
        assert again.response.payment_id == payment.payment_id
        assert again.response.transaction_id == payment.transaction_id
        assert again.response.processed_at == payment.processed_at
    # A failed capture did not happen (every tenth, about 200 of each mode's 2,000).
    failed = await in_thread(statuses, indices(outcomes, "error:")[::10])
    assert {p.status for p in failed} == {pb.PAYMENT_STATUS_PENDING}


def metrics(handle: Any) -> str:
    text: bytes = handle.running.metrics.render()[0]
    return text.decode()
