"""The console's HTTP surface on a real app: guard, CSRF, read-only, production, SSE."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest
import trio

from paysim.config import Environment, Settings
from paysim.console.settings import ConsoleSettings
from tests.grpc_helpers import StartApp, call, create_request, make_settings, payment_stub


def _with_console(**console: Any) -> Settings:
    return dataclasses.replace(make_settings(), console=ConsoleSettings(**console))


async def _client(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False)


async def test_the_page_and_its_assets_are_served(start_app: StartApp) -> None:
    app = await start_app()
    async with await _client(app.http_port) as client:
        page = await client.get("/console")
        assert page.status_code == 200
        assert b'<script src="/console/app.js">' in page.content
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("/console/app.js", "/console/app.css"):
            assert (await client.get(asset)).status_code == 200


async def test_a_created_payment_is_listed_with_its_idempotency_key(start_app: StartApp) -> None:
    app = await start_app()
    with payment_stub(app.grpc_port) as stub:
        created = await call(stub.CreatePaymentIntent, create_request(idempotency_key="k-1"))
    async with await _client(app.http_port) as client:
        listed = (await client.get("/console/api/payments", params={"key": "k-1"})).json()
        other = (await client.get("/console/api/payments", params={"key": "k-2"})).json()
        one = await client.get("/console/api/payment", params={"id": created.payment_intent_id})
    assert [p["id"] for p in listed["payments"]] == [created.payment_intent_id]
    assert listed["counts"] == {"PENDING": 1}
    assert other["payments"] == []
    body = one.text
    assert created.client_secret not in body  # never shown
    assert json.loads(body)["timeline"][0]["cause"] == "CreatePaymentIntent"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "http://evil.example"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Content-Type": "text/plain"}, 415),
    ],
)
async def test_actions_refuse_other_origins_and_forms(
    start_app: StartApp, headers: dict[str, str], status: int
) -> None:
    app = await start_app()
    async with await _client(app.http_port) as client:
        sent = {"Content-Type": "application/json", **headers}
        answer = await client.post("/console/api/create", content=b"{}", headers=sent)
    assert answer.status_code == status
    assert app.running.metrics  # the app is still up


async def test_a_same_origin_action_goes_through_the_service(start_app: StartApp) -> None:
    app = await start_app()
    async with await _client(app.http_port) as client:
        origin = {"Origin": f"http://127.0.0.1:{app.http_port}"}
        created = await client.post(
            "/console/api/create", json={"amount": 5000, "webhook_url": ""}, headers=origin
        )
        pid = created.json()["payment_id"]
        refused = await client.post(
            "/console/api/action",
            json={"action": "decline", "payment_id": pid, "code": "nonsense"},
            headers=origin,
        )
        declined = await client.post(
            "/console/api/action",
            json={"action": "decline", "payment_id": pid, "code": "insufficient_funds"},
            headers=origin,
        )
    assert refused.status_code == 400
    assert declined.status_code == 200
    payment = await app.running.service.get_payment(pid)
    assert payment.status.name == "FAILED"
    assert payment.result is not None
    assert payment.result.response_code == 51


async def test_read_only_refuses_every_action(start_app: StartApp) -> None:
    app = await start_app(_with_console(read_only=True))
    async with await _client(app.http_port) as client:
        answer = await client.post("/console/api/create", json={})
        assert (await client.get("/console/api/payments")).status_code == 200
    assert answer.status_code == 403
    assert "read-only" in answer.json()["error"]


async def test_production_without_a_token_serves_no_console(start_app: StartApp) -> None:
    settings = dataclasses.replace(make_settings(), environment=Environment.PRODUCTION)
    app = await start_app(settings)
    async with await _client(app.http_port) as client:
        assert (await client.get("/console")).status_code == 404
        assert (await client.get("/console/api/payments")).status_code == 404


async def test_a_token_is_needed_as_bearer_or_cookie(start_app: StartApp) -> None:
    app = await start_app(_with_console(token="t0ken"))
    async with await _client(app.http_port) as client:
        assert (await client.get("/console/api/payments")).status_code == 401
        page = await client.get("/console")
        assert page.status_code == 401
        assert b"needs its token" in page.content
        bearer = {"Authorization": "Bearer t0ken"}
        assert (await client.get("/console/api/payments", headers=bearer)).status_code == 200
        login = await client.post("/console/login", data={"token": "t0ken"})
        assert login.status_code == 303
        assert "HttpOnly" in login.headers["set-cookie"]
        assert (await client.get("/console/api/payments")).status_code == 200  # the cookie


async def test_the_stream_says_hello_then_sends_each_payment(start_app: StartApp) -> None:
    app = await start_app()
    async with (
        await _client(app.http_port) as client,
        client.stream("GET", "/console/api/events") as stream,
    ):
        assert stream.headers["content-type"] == "text/event-stream"
        lines = stream.aiter_lines()
        with trio.fail_after(5):
            assert await anext(lines) == "retry: 1000"
            assert await anext(lines) == "event: hello"
            with payment_stub(app.grpc_port) as stub:
                created = await call(stub.CreatePaymentIntent, create_request())
            async for line in lines:
                if line.startswith("data:") and created.payment_intent_id in line:
                    break
