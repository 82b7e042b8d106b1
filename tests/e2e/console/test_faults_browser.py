"""The console's Faults view in a real headless Chromium: state shown as text, changes applied."""

from __future__ import annotations

from paysim.faults.settings import ApiChaosSettings
from tests.e2e.console.harness import Page, console_settings


async def test_start_a_timeline_apply_and_clear_a_plan(page: Page, start_console: object) -> None:
    app = await start_console(console_settings(api_chaos=ApiChaosSettings(enabled=True)))  # type: ignore[operator]
    await page.open(f"http://127.0.0.1:{app.running.http_port}/console#faults")
    await page.wait_text("#fx-plan tbody", "no faults on any RPC")
    assert await page.wait_text("#fx-timeline", "none") == "none"
    await page.wait_text("#fx-example", "regional_blip")
    await page.run(
        lambda: page.driver.execute_script(
            "document.getElementById('fx-example').value = 'regional_blip'"
        )
    )
    await page.type("#fx-seed-in", "5")
    await page.click("#fx-start")
    await page.wait_text("#fx-timeline", "regional-blip: phase ")
    await page.wait_text("#fx-seed", "5")
    await page.type("#fx-plan-in", '{"rpcs": {"*": {"error_rate": 2}}}')
    await page.click("#fx-apply")
    await page.wait_text("#fx-message", "rpcs.*.error_rate: a number between 0 and 1")
    await page.type("#fx-plan-in", "{<b>")
    await page.click("#fx-apply")
    await page.wait_text("#fx-message", "the plan is not valid JSON")
    await page.type("#fx-plan-in", '{"rpcs": {"ProcessPayment": {"error_rate": 0.25}}}')
    await page.click("#fx-apply")
    await page.wait_text("#fx-message", "plan applied")
    row = await page.wait_text("#fx-plan tbody", "ProcessPayment")
    assert "0.25 (unavailable: 1)" in row
    assert await page.wait_text("#fx-timeline", "none") == "none"  # a plan ends the timeline
    await page.screenshot("faults")
    await page.click("#fx-clear")
    await page.wait_text("#fx-plan tbody", "no faults on any RPC")
