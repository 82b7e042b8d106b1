"""The reconciliation report counts webhooks that were never acknowledged with a 2xx.

The real dispatcher, with a receiver told to answer 410 (gone) or 503 until the
dispatcher gives up, and one that answers 200; virtual time for the retries.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from paysim.faults.plan import FaultPlan
from paysim.faults.settings import ApiChaosSettings
from paysim.testing import run_paysim
from paysim.testing.settings import build_settings


def _settings() -> Any:
    base = build_settings(webhook_max_attempts=2)
    chaos = ApiChaosSettings(enabled=True, plan=FaultPlan.from_dict({}), seed=1)
    return dataclasses.replace(base, api_chaos=chaos)


async def _report(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.get(f"{url}/reconciliation")
    return answer.json()  # type: ignore[no-any-return]


async def _complete(sim: Any) -> str:
    intent = await sim.create_intent()
    pid: str = intent.payment_intent_id
    await sim.force(pid, "completed")
    return pid


async def test_deliveries_that_end_without_a_2xx_are_counted_by_outcome(autojump_clock):
    async with run_paysim(_settings()) as root:
        gone, failing, fine = root.scoped("gone"), root.scoped("fail"), root.scoped("fine")
        gone.webhooks.fail(410)
        failing.webhooks.fail(503)
        gone_id = await _complete(gone)
        failing_id = await _complete(failing)
        fine_id = await _complete(fine)
        await fine.webhooks.next(fine_id, "completed")
        await root.advance(3600)  # every retry is due and made
        report = (await _report(root.http_url))["unacknowledged_webhooks"]
    # One change each (the completion) for the failing payments; none for the fine one.
    assert report["by_outcome"] == {"gave_up": 1, "gone": 1}
    assert report["count"] == 2
    assert {(s["payment_intent_id"], s["outcome"]) for s in report["sample"]} == {
        (gone_id, "gone"),
        (failing_id, "gave_up"),
    }
