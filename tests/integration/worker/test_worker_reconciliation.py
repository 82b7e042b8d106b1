"""The whole reconciliation path: API → EventBridge → SQS → the real worker → the API's report.

paysim (``run_paysim``) publishes to moto's EventBridge, whose rule puts each
event on this test's queue; ``run_worker`` (the worker application, in this
process) consumes it and PATCHes ``ReservationStub``. The API is told where the
worker is (RECONCILIATION_WORKER_URL, grace 0) and its ``/reconciliation``
cross-checks the worker's record against its payments: a forged COMPLETED
event for a FAILED payment is a reservation confirmed for a payment that did
not complete; a completion whose PATCH keeps failing is a payment never
confirmed. Real time (moto): a few seconds.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest
import trio

from paysim.config import Settings, WorkerSettings
from paysim.entrypoints.http import HttpLimits, serve_http
from paysim.testing import run_paysim
from paysim.testing.settings import build_settings
from paysim.worker.app import WorkerRunning, run_worker
from tests.integration.worker.test_sqs_worker import (
    Queues,
    ReservationStub,
    envelope,
    handled,
    sample,
    wait_until,
)

pytest_plugins = ["tests.moto_fixtures"]


@pytest.fixture
async def reservations(nursery: trio.Nursery) -> ReservationStub:
    stub = ReservationStub()
    port = await nursery.start(serve_http, "127.0.0.1", 0, stub, HttpLimits())
    stub.url = f"http://127.0.0.1:{port}"
    return stub


async def test_the_report_cross_checks_what_the_worker_did(
    nursery, aws_settings, aws_resources, events_client, sqs_client, reservations
):
    worker_settings = dataclasses.replace(
        Settings(),
        aws=aws_settings,
        worker=WorkerSettings(
            queue_url=aws_resources.queue_url,
            reservation_api_url=reservations.url,
            http_host="127.0.0.1",
            http_port=0,
            wait_time_s=1,
        ),
        shutdown_grace_s=1.0,
    )
    shutdown = trio.Event()

    async def worker_app(*, task_status: trio.TaskStatus[WorkerRunning]) -> None:
        await run_worker(
            worker_settings, shutdown=shutdown, handle_signals=False, task_status=task_status
        )

    running: WorkerRunning = await nursery.start(worker_app)
    worker = running.worker
    settings = build_settings(
        reconciliation_worker_url=f"http://127.0.0.1:{running.http_port}",
        reconciliation_grace_ms=0,
        event_bus_name=aws_settings.event_bus_name,
        payment_event_source=aws_settings.event_source,
        aws_region=aws_settings.region,
    )
    queues = Queues(sqs_client, aws_resources.queue_url, aws_resources.dlq_url)
    async with run_paysim(settings, events_client=events_client) as sim:
        paid = (await sim.create_intent()).payment_intent_id
        await sim.force(paid, "completed")
        failed_intent = await sim.create_intent()
        failed = failed_intent.payment_intent_id
        await sim.force(failed, "failed")
        failed_rsv = (await sim.payment(failed)).reservation_id
        # A forged event: the worker confirms a reservation for a payment that failed.
        forged = envelope(
            payment_id=failed, reservation_id=failed_rsv, source=aws_settings.event_source
        )
        await queues.send(json.dumps(forged))
        await wait_until(
            lambda: handled(worker, "confirmed") == 2 and handled(worker, "cancelled") == 1
        )
        reservations.default_status = 503  # from now on every PATCH fails
        lost = (await sim.create_intent()).payment_intent_id
        await sim.force(lost, "completed")
        await wait_until(
            lambda: sample(worker, "paysim_worker_failures_total", reason="http_status") >= 1
        )
        async with httpx.AsyncClient(base_url=sim.http_url, trust_env=False) as client:
            report: dict[str, Any] = (await client.get("/reconciliation")).json()
            metrics = (await client.get("/metrics")).text
        async with httpx.AsyncClient(trust_env=False) as client:
            facts = (
                await client.get(f"http://127.0.0.1:{running.http_port}/reconciliation")
            ).json()
    shutdown.set()
    section = report["worker"]
    assert "error" not in section, section
    assert section["url"] == f"http://127.0.0.1:{running.http_port}"
    assert section["reservation_api"] is True
    assert section["confirmed_not_completed"]["count"] == 1
    [bad] = section["confirmed_not_completed"]["sample"]
    assert (bad["payment_id"], bad["reservation_id"], bad["status"]) == (
        failed,
        failed_rsv,
        "FAILED",
    )
    assert section["completed_not_confirmed"]["count"] == 1
    assert [s["payment_id"] for s in section["completed_not_confirmed"]["sample"]] == [lost]
    assert section["confirmed_unknown"]["count"] == 0
    assert "paysim_reconciliation_worker_errors_total" in metrics
    # The worker's own record: facts only, one entry per reservation it acted on.
    decisions = {
        a["payment_id"]: a["decision"] for r in facts["reservations"] for a in r["actions"]
    }
    assert decisions[paid] == "CONFIRMED"
    assert decisions[failed] in ("CONFIRMED", "CANCELLED")
    assert lost not in decisions
