"""Shared fixtures: a real paysim app on loopback port 0, and grpcio clients for it.

* ``settings``: loopback, port 0 for gRPC and HTTP, and a default PG delay of
  30 s so no timer fires during a test unless the test asks for it (tests
  resolve payments with ProcessPayment, or lower the delay and wait on the
  ``RecordingNotifier``, never on the clock).
* ``start_app``: a factory; ``await start_app(settings)`` runs
  ``paysim.app.run`` in the test's nursery via ``nursery.start`` (so it returns
  only once both ports listen) and gives back an ``AppHandle``. On teardown
  every app started is shut down and its ``run`` must return; anything it
  raised fails the test (also when the test itself did not look).
* ``app``: one app with the default test settings.
* ``channel`` / ``stub``: a grpcio channel to ``app`` (closed after the test)
  and a ``PaymentServiceStub`` on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import trio

from paysim._proto.proto.payment.v1 import payment_pb2_grpc
from paysim.adapters.recording_notifier import RecordingNotifier
from paysim.app import Running, run
from paysim.config import Settings
from tests.grpc_helpers import (
    AppHandle,
    StartApp,
    make_settings,
    open_channel,
)


class _WatchedStatus(trio.TaskStatus[Running]):
    """Passes ``started`` on, remembering that it was called."""

    def __init__(self, inner: trio.TaskStatus[Running]) -> None:
        self._inner = inner
        self.called = False

    def started(self, value: Running | None = None) -> None:
        self.called = True
        self._inner.started(value)  # type: ignore[arg-type]


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def start_app(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[StartApp]:
    handles: list[AppHandle] = []

    async def start(app_settings: Settings | None = None) -> AppHandle:
        app_settings = app_settings if app_settings is not None else settings
        notifier = RecordingNotifier()
        shutdown = trio.Event()
        stopped = trio.Event()
        failures: list[Exception] = []

        async def run_app(*, task_status: trio.TaskStatus[Running]) -> None:
            status = _WatchedStatus(task_status)
            try:
                await run(
                    app_settings,
                    shutdown=shutdown,
                    notifier=notifier,
                    task_status=status,
                )
            except Exception as exc:
                if not status.called:
                    raise  # nursery.start re-raises it in the test
                failures.append(exc)
            finally:
                stopped.set()

        running = await nursery.start(run_app)
        handle = AppHandle(app_settings, running, notifier, shutdown, stopped, failures)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.shutdown.set()
    for handle in handles:
        await handle.stop()
    for handle in handles:
        if handle.failure is not None:
            raise handle.failure


@pytest.fixture
async def app(start_app: StartApp) -> AppHandle:
    return await start_app()


@pytest.fixture
async def channel(app: AppHandle) -> AsyncIterator[grpc.Channel]:
    """A channel to ``app``. The app stops before the channel closes: the server
    ends the connection, as in production, rather than the client at shutdown."""
    ch = open_channel(app.grpc_port)
    yield ch
    await app.stop()
    ch.close()


@pytest.fixture
def stub(channel: grpc.Channel) -> Any:
    return payment_pb2_grpc.PaymentServiceStub(channel)
