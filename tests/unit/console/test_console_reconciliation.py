"""The console's reconciliation view: the same report, behind the same guard; absent when off."""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

import httpx

from paysim.config import Settings
from paysim.console.settings import ConsoleSettings
from paysim.faults.settings import ApiChaosSettings, WorkerCheckSettings
from tests.grpc_helpers import StartApp, call, create_request, make_settings, payment_stub

TOKEN = {"Authorization": "Bearer t0ken"}


def _settings(console: dict[str, Any], **chaos: Any) -> Settings:
    return dataclasses.replace(
        make_settings(), console=ConsoleSettings(**console), api_chaos=ApiChaosSettings(**chaos)
    )


def _client(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False)


async def test_without_a_report_the_view_says_how_to_get_one(start_app: StartApp) -> None:
    app = await start_app(_settings({}))
    async with _client(app.http_port) as client:
        answer = await client.get("/console/api/reconciliation")
        meta = (await client.get("/console/api/meta")).json()
        assert (await client.get("/reconciliation")).status_code == 404
    assert answer.status_code == 404
    assert "CHAOS_API_ENABLED=true or RECONCILIATION_WORKER_URL" in answer.json()["error"]
    assert meta["reconciliation"] is False


async def test_the_view_serves_the_report_behind_the_token(start_app: StartApp) -> None:
    with socket.socket() as bound:  # the worker is down: connecting is refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        url = f"http://user:secret@127.0.0.1:{port}/"
        worker = WorkerCheckSettings(url=url, interval_s=0)
        app = await start_app(_settings({"token": "t0ken"}, worker=worker))
        with payment_stub(app.grpc_port) as stub:
            await call(stub.CreatePaymentIntent, create_request(reservation_id="<b>rsv</b>"))
        async with _client(app.http_port) as client:
            refused = await client.get("/console/api/reconciliation")
            answer = await client.get("/console/api/reconciliation", headers=TOKEN)
            direct = (await client.get("/reconciliation")).json()
            posted = await client.post("/console/api/reconciliation", headers=TOKEN, json={})
            meta = (await client.get("/console/api/meta", headers=TOKEN)).json()
            page = await client.get("/console", headers=TOKEN)
    assert refused.status_code == 401
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    report = answer.json()
    assert set(report) >= {"double_charges", "lost_answers", "abandoned_intents", "worker"}
    assert report["worker"]["error"].startswith(
        f"the worker at http://127.0.0.1:{port} is unreachable"
    )
    assert "secret" not in answer.text  # the URL's user info is never shown
    assert direct.keys() == report.keys()
    assert posted.status_code == 405
    assert meta["reconciliation"] is True
    assert b'id="nav-reconciliation"' in page.content


async def test_with_the_console_off_nothing_of_the_view_exists(start_app: StartApp) -> None:
    app = await start_app(_settings({"enabled": False}, enabled=True))
    async with _client(app.http_port) as client:
        assert (await client.get("/console/api/reconciliation")).status_code == 404
        assert (await client.get("/console/api/reconciliation")).json() == {"error": "not found"}
        assert (await client.get("/reconciliation")).status_code == 200
