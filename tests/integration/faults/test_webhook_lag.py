"""Webhook-lag timeline phases: the real dispatcher and webhook receiver on virtual time.

A webhook that became due during a ``webhooks.lag_ms`` phase arrives that much
later, in order for its payment; one that became due after the phase ended
arrives at once; a held one keeps its due time when the phase ends.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
import trio

from paysim.faults.plan import FaultPlan
from paysim.faults.settings import ApiChaosSettings
from paysim.faults.timeline import load_timeline
from paysim.testing import run_paysim
from paysim.testing.settings import build_settings

TIMELINE = {
    "name": "lagging",
    "phases": [
        {"name": "webhooks-lag", "duration_s": 60, "webhooks": {"lag_ms": 30000}},
        {"name": "recovery", "duration_s": 60},
    ],
}


def _settings() -> Any:
    chaos = ApiChaosSettings(enabled=True, plan=FaultPlan.from_dict({}), seed=3)
    return dataclasses.replace(build_settings(), api_chaos=chaos)


async def _admin(url: str, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.request(method, f"{url}{path}", json=body)
    assert answer.status_code == 200, answer.text
    return answer


async def test_webhooks_due_in_a_lag_phase_arrive_late_and_in_order(autojump_clock):
    async with run_paysim(_settings()) as root:
        await _admin(root.http_url, "PUT", "/admin/faults", {"timeline": TIMELINE})
        sim = root.scoped("lag")
        pid = (await sim.create_intent()).payment_intent_id
        started = _now()
        await sim.force(pid, "processing")
        await sim.force(pid, "completed")
        await root.advance(20)  # the lag phase goes on; nothing has arrived yet
        assert sim.webhooks.for_payment(pid) == []
        processing = await sim.webhooks.next(pid, "processing", timeout_s=120)
        completed = await sim.webhooks.next(pid, "completed", timeout_s=120)
        assert processing.received_at - started == pytest.approx(30, abs=0.5)
        assert completed.received_at >= processing.received_at
        assert [d.status for d in sim.webhooks.for_payment(pid)] == [
            "PAYMENT_STATUS_PROCESSING",
            "PAYMENT_STATUS_COMPLETED",
        ]
        # Past the phase's end (60 s in): webhooks are on time again.
        await root.advance(started + 61 - _now())
        state = (await _admin(root.http_url, "GET", "/admin/faults")).json()
        assert state["timeline"]["phase"] == "recovery"
        later = (await sim.create_intent()).payment_intent_id
        forced_at = _now()
        await sim.force(later, "completed")
        on_time = await sim.webhooks.next(later, "completed", timeout_s=5)
        assert on_time.received_at - forced_at < 1
        metrics = (await _admin(root.http_url, "GET", "/metrics")).text
    assert 'paysim_api_faults_total{code="OK",kind="webhook_lag",rpc="webhook"} 2.0' in metrics


async def test_a_held_webhook_keeps_its_due_time_when_the_phase_ends(autojump_clock):
    short = {
        "name": "blip",
        "phases": [{"name": "lag", "duration_s": 5, "webhooks": {"lag_ms": 30000}}],
    }
    async with run_paysim(_settings()) as root:
        await _admin(root.http_url, "PUT", "/admin/faults", {"timeline": short})
        sim = root.scoped("held")
        pid = (await sim.create_intent()).payment_intent_id
        forced_at = _now()
        await sim.force(pid, "completed")
        await root.advance(10)  # the timeline is over; the held delivery is not released
        assert sim.webhooks.for_payment(pid) == []
        arrived = await sim.webhooks.next(pid, "completed", timeout_s=120)
        assert arrived.received_at - forced_at == pytest.approx(30, abs=0.5)


def test_the_shipped_ticket_on_sale_timeline_lags_webhooks_after_the_storm():
    timeline = load_timeline("ticket_on_sale")
    names = [p.name for p in timeline.phases]
    lag = timeline.phases[names.index("webhooks-lag")]
    assert names.index("webhooks-lag") == names.index("storm") + 1
    assert lag.plan.webhooks is not None
    assert lag.plan.webhooks.lag.low_s == 30.0


def _now() -> float:
    return trio.current_time()
