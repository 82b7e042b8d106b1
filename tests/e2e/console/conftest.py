"""Fixtures for the console's browser tests: one Chromium per module, an app per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from paysim.app import Running, run
from paysim.config import Settings
from tests.e2e.console.harness import (
    Page,
    Receiver,
    browser_missing,
    close_driver,
    console_settings,
    open_driver,
)
from tests.grpc_helpers import STOP_TIMEOUT_S

_missing = browser_missing()
if _missing is not None:
    pytest.skip(f"the console's browser tests need Chromium: {_missing}", allow_module_level=True)


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    chrome, profile = open_driver()
    yield chrome
    close_driver(chrome, profile)


@pytest.fixture
def page(driver: object) -> Page:
    return Page(driver)  # type: ignore[arg-type]


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Receiver:
    r = Receiver()
    await r.serve(nursery)
    return r


class RunningApp:
    """A real app (webhooks delivered for real) in the test's nursery; ``stop`` drains it."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.shutdown = trio.Event()
        self.stopped = trio.Event()
        self.running: Running | None = None

    async def start(self, settings: Settings) -> Running:
        async def run_app(*, task_status: trio.TaskStatus[Running]) -> None:
            try:
                await run(settings, shutdown=self.shutdown, task_status=task_status)
            finally:
                self.stopped.set()

        self.running = await self._nursery.start(run_app)
        return self.running

    async def stop(self) -> None:
        self.shutdown.set()
        with trio.fail_after(STOP_TIMEOUT_S):
            await self.stopped.wait()


@pytest.fixture
async def start_console(nursery: trio.Nursery) -> AsyncIterator[object]:
    apps: list[RunningApp] = []

    async def start(settings: Settings | None = None) -> RunningApp:
        app = RunningApp(nursery)
        await app.start(settings if settings is not None else console_settings())
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()
