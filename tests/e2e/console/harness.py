"""A real app with real webhook delivery, a webhook receiver, and a headless Chromium.

Selenium's calls block, so each runs in a worker thread (``Page.run``); the
app and the receiver run in the test's trio nursery meanwhile. Waits are
bounded waits on a condition in the page (``Page.wait_text``), never sleeps.
Screenshots are written to ``paysim/console/static/screenshots/`` only when
PAYSIM_CONSOLE_SCREENSHOTS is set (the README shows them).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from paysim.config import EventSettings, Settings, WebhookSettings
from paysim.entrypoints.http import HttpApp, HttpLimits, HttpRequest, HttpResponse, serve_http
from paysim.observability.health import Readiness
from paysim.observability.metrics import ProcessMetrics
from tests.grpc_helpers import make_settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 10.0
SCREENSHOTS = Path(__file__).parents[3] / "paysim" / "console" / "static" / "screenshots"
T = TypeVar("T")


def browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            return f"{path} is not installed (apt-get install -y chromium chromium-driver)"
    return None


def open_driver() -> tuple[webdriver.Chrome, str]:
    profile = tempfile.mkdtemp(prefix="paysim-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER)), profile


def close_driver(driver: webdriver.Chrome, profile: str) -> None:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def console_settings(**changes: Any) -> Settings:
    """Test settings with real webhooks (one attempt, so a failure is final) and no event bus."""
    base = make_settings()
    return dataclasses.replace(
        base,
        events=EventSettings(enabled=False),
        webhook=WebhookSettings(max_attempts=1, timeout_s=2.0, retry_schedule="fast"),
        **changes,
    )


class Receiver:
    """A webhook receiver on loopback; ``status`` is what it answers."""

    def __init__(self) -> None:
        self.status = 200
        self.received = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def serve(self, nursery: trio.Nursery) -> None:
        app = HttpApp(Readiness(), ProcessMetrics())

        async def hook(request: HttpRequest) -> HttpResponse:
            self.received += 1
            return HttpResponse(self.status, b'{"ok":true}')

        app.add_route("/hook", frozenset({"POST"}), hook)
        self.port = await nursery.start(serve_http, "127.0.0.1", 0, app, HttpLimits())


@dataclasses.dataclass
class Page:
    driver: webdriver.Chrome

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(functools.partial(fn, *args))

    async def open(self, url: str) -> None:
        await self.run(self.driver.get, url)

    async def _on(self, css: str, act: Callable[[WebElement], None]) -> None:
        """Find ``css`` and act on it, again if the list re-rendered it meanwhile."""

        def attempt(driver: webdriver.Chrome) -> bool:
            try:
                act(driver.find_element(By.CSS_SELECTOR, css))
            except (StaleElementReferenceException, NoSuchElementException):
                return False
            return True

        wait = WebDriverWait(self.driver, WAIT_S, poll_frequency=0.05)
        await self.run(wait.until, attempt, f"could not act on {css!r}")

    async def click(self, css: str) -> None:
        await self._on(css, lambda e: e.click())

    async def type(self, css: str, text: str) -> None:
        def clear_and_type(element: WebElement) -> None:
            element.clear()
            element.send_keys(text)

        await self._on(css, clear_and_type)

    async def wait_text(self, css: str, wanted: str, timeout: float = WAIT_S) -> str:
        """Wait until the element at ``css`` (the first) contains ``wanted``; its text."""

        def check(driver: webdriver.Chrome) -> str | bool:
            try:
                found = driver.find_elements(By.CSS_SELECTOR, css)
                text = found[0].text if found else ""
            except StaleElementReferenceException:
                return False
            except WebDriverException as exc:  # chromedriver's other word for stale
                if "does not belong to the document" in str(exc):
                    return False
                raise
            return text if wanted in text else False

        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.05)
        return await self.run(wait.until, check, f"{css!r} never showed {wanted!r}")

    async def wait_count(self, css: str, count: int, timeout: float = WAIT_S) -> None:
        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.05)
        await self.run(
            wait.until,
            lambda d: len(d.find_elements(By.CSS_SELECTOR, css)) == count,
            f"never {count} of {css!r}",
        )

    async def screenshot(self, name: str) -> None:
        if os.environ.get("PAYSIM_CONSOLE_SCREENSHOTS"):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await self.run(self.driver.save_screenshot, str(SCREENSHOTS / f"{name}.png"))
