"""The console's reconciliation view in a real headless Chromium: the report, escaped, linked."""

from __future__ import annotations

import httpx

from paysim.faults.settings import ApiChaosSettings
from tests.e2e.console.harness import Page, console_settings
from tests.e2e.console.test_console_browser import create


async def test_a_double_charge_shows_in_the_view_and_links_to_its_payments(
    page: Page, start_console: object
) -> None:
    app = await start_console(console_settings(api_chaos=ApiChaosSettings(enabled=True)))  # type: ignore[operator]
    port = app.running.http_port
    rid = "<b>rsv</b>"
    first = await create(app.running.grpc_port, reservation_id=rid)
    second = await create(app.running.grpc_port, reservation_id=rid)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        for pid in (first, second):
            answer = await client.post(
                "/console/api/action", json={"action": "approve", "payment_id": pid}
            )
            assert answer.status_code == 200, answer.text
    await page.open(f"http://127.0.0.1:{port}/console#reconciliation")
    row = await page.wait_text("#r-summary tbody tr", "double charges")
    assert "double charges (reservations) 1 " in row
    assert first in row
    assert second in row
    assert f"({rid})" in row  # shown as text, not markup
    assert "no worker configured" in await page.wait_text("#r-worker", "worker")
    await page.screenshot("reconciliation")
    await page.click("#r-summary a")  # a sample id opens the payment's detail
    await page.wait_text("#d-title", "pay_")
    await page.wait_text("#d-status", "COMPLETED")
