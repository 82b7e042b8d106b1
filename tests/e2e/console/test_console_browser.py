"""The console in a real headless Chromium, against a real app delivering real webhooks."""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

import trio

from paysim.config import Environment
from paysim.console.settings import ConsoleSettings
from tests.e2e.console.harness import Page, Receiver, console_settings
from tests.grpc_helpers import call, create_request, payment_stub


async def create(grpc_port: int, **fields: Any) -> str:
    with payment_stub(grpc_port) as stub:
        response = await call(stub.CreatePaymentIntent, create_request(**fields))
    return str(response.payment_intent_id)


async def open_console(page: Page, http_port: int) -> None:
    await page.open(f"http://127.0.0.1:{http_port}/console")
    await page.wait_text("#live", "live")


async def test_a_payment_created_over_grpc_appears_within_a_second(
    page: Page, start_console: Any
) -> None:
    app = await start_console()
    await open_console(page, app.running.http_port)
    pid = await create(app.running.grpc_port)
    await page.wait_text("#payments tbody", pid, timeout=1.0)
    await page.wait_text(f'#payments tr[data-id="{pid}"]', "PENDING", timeout=1.0)
    await page.screenshot("list")


async def test_approve_shows_completed_and_the_webhook_attempt(
    page: Page, start_console: Any, receiver: Receiver
) -> None:
    app = await start_console()
    await open_console(page, app.running.http_port)
    pid = await create(app.running.grpc_port, webhook_url=receiver.url)
    await page.click(f'#payments tr[data-id="{pid}"]')
    await page.wait_text("#d-status", "PENDING")
    await page.click('#actions button[data-action="approve"]')
    await page.wait_text("#d-status", "COMPLETED")
    await page.wait_text(f'#payments tr[data-id="{pid}"]', "COMPLETED")
    timeline = await page.wait_text("#timeline", "webhook delivered (attempt 1): HTTP 200")
    assert "PENDING → COMPLETED (console: approve)" in timeline
    assert receiver.received == 1
    await page.screenshot("timeline")


async def test_a_partial_refund(page: Page, start_console: Any, receiver: Receiver) -> None:
    app = await start_console()
    await open_console(page, app.running.http_port)
    pid = await create(app.running.grpc_port, webhook_url=receiver.url)
    await page.click(f'#payments tr[data-id="{pid}"]')
    await page.click('#actions button[data-action="approve"]')
    await page.wait_text("#d-status", "COMPLETED")
    await page.type("#refund-amount", "20000")
    await page.click('#actions button[data-action="refund"]')
    await page.wait_text(f'#payments tr[data-id="{pid}"]', "(refunded 20000)")
    timeline = await page.wait_text("#timeline", "refund 20000")
    assert "COMPLETED → COMPLETED (console: refund)" in timeline
    assert "REFUNDED" not in await page.wait_text("#d-status", "COMPLETED")


async def test_a_failing_endpoint_then_recover(
    page: Page, start_console: Any, receiver: Receiver
) -> None:
    app = await start_console()
    await open_console(page, app.running.http_port)
    receiver.status = 500
    pid = await create(app.running.grpc_port, webhook_url=receiver.url)
    await page.click(f'#payments tr[data-id="{pid}"]')
    await page.click('#actions button[data-action="approve"]')
    await page.wait_text("#timeline", "webhook gave_up (attempt 1): HTTP 500")
    host = f"127.0.0.1:{receiver.port}"
    row = await page.wait_text(f'#endpoints tr[data-host="{host}"]', "HTTP 500")
    assert f"{host} 0 0 1" in row  # delivered 0, retrying 0, failed 1
    await page.screenshot("endpoints")
    receiver.status = 200
    await page.click("#recover")
    await page.wait_text("#recover", "1 resent")
    await page.wait_text("#timeline", "webhook delivered (attempt 1): HTTP 200")
    assert receiver.received == 2


async def test_the_filter(page: Page, start_console: Any) -> None:
    app = await start_console()
    await open_console(page, app.running.http_port)
    alice = await create(app.running.grpc_port, user_id="alice")
    bob = await create(app.running.grpc_port, user_id="bob")
    await page.wait_text("#payments tbody", bob)
    await page.type("#f-user", "alice")
    await page.wait_count("#payments tbody tr", 1)
    assert alice in await page.wait_text("#payments tbody", alice)
    await page.type("#f-user", "")
    await page.type("#q", bob[-6:])
    await page.wait_count("#payments tbody tr", 1)
    assert bob in await page.wait_text("#payments tbody", bob)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_live_stream_reconnects_after_a_server_restart(
    page: Page, start_console: Any
) -> None:
    base = console_settings()
    settings = dataclasses.replace(base, http=dataclasses.replace(base.http, port=_free_port()))
    first = await start_console(settings)
    await open_console(page, first.running.http_port)
    await first.stop()
    await page.wait_text("#live", "reconnecting")
    second = await start_console(settings)
    await page.wait_text("#live", "live")
    pid = await create(second.running.grpc_port)
    await page.wait_text("#payments tbody", pid, timeout=1.0)


async def test_the_token_is_required_in_production(page: Page, start_console: Any) -> None:
    settings = console_settings(
        environment=Environment.PRODUCTION, console=ConsoleSettings(token="s3cret-token")
    )
    app = await start_console(settings)
    await page.open(f"http://127.0.0.1:{app.running.http_port}/console")
    await page.wait_text("body", "needs its token")
    await page.type("#token", "wrong")
    await page.click("#sign-in")
    await page.wait_text("#login-error", "not the console token")
    await page.type("#token", "s3cret-token")
    await page.click("#sign-in")
    await page.wait_text("#live", "live")
    pid = await create(app.running.grpc_port)
    await page.wait_text("#payments tbody", pid)
    assert "s3cret-token" not in await page.run(lambda: page.driver.page_source)
    await trio.lowlevel.checkpoint()
