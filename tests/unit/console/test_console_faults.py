"""The console's Faults view: /admin/faults's state and changes, behind the console's guard."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from paysim.config import Settings
from paysim.console.settings import ConsoleSettings
from paysim.faults.plan import FaultPlan
from paysim.faults.settings import ApiChaosSettings
from tests.grpc_helpers import StartApp, make_settings

TOKEN = {"Authorization": "Bearer t0ken"}
CHANGE = "/console/api/faults/change"
BAD_PLAN = {"plan": {"rpcs": {"*": {"error_rate": 2}}}}


def _settings(console: dict[str, Any], **chaos: Any) -> Settings:
    return dataclasses.replace(
        make_settings(), console=ConsoleSettings(**console), api_chaos=ApiChaosSettings(**chaos)
    )


def _client(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False)


async def test_with_faults_off_the_view_says_how_to_turn_them_on(start_app: StartApp) -> None:
    app = await start_app(_settings({}))
    async with _client(app.http_port) as client:
        read = await client.get("/console/api/faults")
        change = await client.post(CHANGE, json={"timeline": "ticket_on_sale"})
        meta = (await client.get("/console/api/meta")).json()
        assert (await client.get("/admin/faults")).status_code == 404
    assert read.status_code == 404
    assert "CHAOS_API_ENABLED=true" in read.json()["error"]
    assert change.status_code == 404
    assert change.json() == read.json()
    assert meta["faults"] is False


async def test_with_the_console_off_nothing_of_the_view_exists(start_app: StartApp) -> None:
    app = await start_app(_settings({"enabled": False}, enabled=True))
    async with _client(app.http_port) as client:
        assert (await client.get("/console/api/faults")).json() == {"error": "not found"}
        assert (await client.post(CHANGE, json={"timeline": None})).status_code == 404
        assert (await client.get("/admin/faults")).status_code == 200


async def test_start_a_timeline_stop_it_and_clear_the_plan(start_app: StartApp) -> None:
    base = {"rpcs": {"CreatePaymentIntent": {"error_rate": 0.5}}}
    plan = FaultPlan.from_dict(base)
    app = await start_app(_settings({"token": "t0ken"}, plan=plan, seed=1))
    async with _client(app.http_port) as client:
        refused = await client.get("/console/api/faults")
        before = await client.get("/console/api/faults", headers=TOKEN)
        started = await client.post(
            CHANGE, headers=TOKEN, json={"timeline": "ticket_on_sale", "seed": 7}
        )
        admin = (await client.get("/admin/faults")).json()
        stopped = await client.post(CHANGE, headers=TOKEN, json={"timeline": None})
        cleared = await client.post(CHANGE, headers=TOKEN, json={"plan": {}})
        meta = (await client.get("/console/api/meta", headers=TOKEN)).json()
        page = await client.get("/console", headers=TOKEN)
    assert refused.status_code == 401
    assert before.json()["plan"]["rpcs"]["CreatePaymentIntent"]["error_rate"] == 0.5
    assert before.json()["timeline"] is None
    assert started.status_code == 200
    state = started.json()
    assert state["seed"] == 7
    assert state["timeline"]["name"] == "ticket-on-sale"
    assert state["timeline"]["phase"] == "queue-opens"
    assert state["plan"]["rpcs"]["*"]["latency"]["distribution"] == "lognormal"
    assert admin["timeline"]["name"] == "ticket-on-sale"  # the admin endpoint sees the same
    assert admin["seed"] == 7
    assert stopped.json()["timeline"] is None
    assert stopped.json()["plan"] == before.json()["base"]  # the base plan is back
    assert cleared.json()["plan"] == {"rpcs": {}}
    assert cleared.json()["base"] == {"rpcs": {}}
    assert meta["faults"] is True
    assert b'id="nav-faults"' in page.content


async def test_a_bad_plan_gets_the_admin_endpoints_message_and_changes_nothing(
    start_app: StartApp,
) -> None:
    app = await start_app(_settings({}, enabled=True, seed=3))
    async with _client(app.http_port) as client:
        before = (await client.get("/console/api/faults")).json()
        bad = await client.post(CHANGE, json={**BAD_PLAN, "seed": 9})
        admin_bad = await client.put("/admin/faults", json={**BAD_PLAN, "seed": 9})
        not_json = await client.post(
            CHANGE, content=b"{plan", headers={"Content-Type": "application/json"}
        )
        unknown = await client.post(CHANGE, json={"timeline": "<script>"})
        after = (await client.get("/console/api/faults")).json()
    assert bad.status_code == 400
    assert bad.json() == {"error": "rpcs.*.error_rate: a number between 0 and 1"}
    assert admin_bad.json() == bad.json()
    assert not_json.status_code == 400
    assert not_json.json() == {"error": "the body must be JSON"}
    assert unknown.status_code == 400
    assert "<script>" not in unknown.text
    assert unknown.json()["error"].startswith("timeline: one of ticket_on_sale,")
    assert after == before  # neither the seed nor the plan changed
    assert after["seed"] == 3


async def test_changes_need_the_same_origin_json_and_a_writable_console(
    start_app: StartApp,
) -> None:
    app = await start_app(_settings({"token": "t0ken", "read_only": True}, enabled=True))
    host = f"127.0.0.1:{app.http_port}"
    start = {"timeline": "regional_blip"}
    async with _client(app.http_port) as client:
        no_token = await client.post(CHANGE, json=start)
        cross = await client.post(
            CHANGE, json=start, headers={**TOKEN, "Origin": "http://evil.example"}
        )
        cross_site = await client.post(
            CHANGE, json=start, headers={**TOKEN, "Sec-Fetch-Site": "cross-site"}
        )
        read_only = await client.post(
            CHANGE, json=start, headers={**TOKEN, "Origin": f"http://{host}"}
        )
        read = await client.get("/console/api/faults", headers=TOKEN)
    assert no_token.status_code == 401
    assert cross.status_code == 403
    assert cross.json() == {"error": "cross-origin request refused"}
    assert cross_site.status_code == 403
    assert read_only.status_code == 403
    assert "CONSOLE_READ_ONLY" in read_only.json()["error"]
    assert read.status_code == 200  # reading is allowed read-only
    assert read.json()["timeline"] is None  # nothing started


async def test_a_form_post_is_refused(start_app: StartApp) -> None:
    app = await start_app(_settings({}, enabled=True))
    async with _client(app.http_port) as client:
        form = await client.post(CHANGE, data={"timeline": "regional_blip"})
        state = (await client.get("/console/api/faults")).json()
    assert form.status_code == 415
    assert state["timeline"] is None
