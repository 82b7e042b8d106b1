"""Helpers for driving paysim with stock grpcio clients from trio tests.

grpcio's client is synchronous, so every call runs in a worker thread through
``trio.to_thread.run_sync``. A thread cannot be cancelled by trio, so every
call carries grpcio's own ``timeout`` as the safety net (``CALL_TIMEOUT_S``)
instead of ``trio.fail_after``.

Resource handling: whoever calls ``open_channel`` closes the channel
(the ``channel`` fixture in ``conftest.py`` does). ``open_health_watch`` owns
its Watch call and its thread: on exit it cancels the call and waits for the
thread to end.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import trio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paysim import errors as paysim_errors
from paysim._proto.proto.common.v1.types_pb2 import Money
from paysim._proto.proto.payment.v1 import payment_pb2, payment_pb2_grpc
from paysim.adapters.recording_notifier import RecordingNotifier
from paysim.app import Running
from paysim.config import GrpcSettings, HttpSettings, Settings, SimulationSettings

CALL_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


@dataclass
class AppHandle:
    """One running app: what ``run`` reported, plus the test's handles on it."""

    settings: Settings
    running: Running
    notifier: RecordingNotifier
    shutdown: trio.Event  # set it to begin the graceful shutdown
    stopped: trio.Event  # set when ``run`` has returned (or raised)
    failures: list[Exception]  # what ``run`` raised after it had started, if anything

    @property
    def grpc_port(self) -> int:
        return self.running.grpc_port

    @property
    def http_port(self) -> int:
        return self.running.http_port

    @property
    def failure(self) -> Exception | None:
        return self.failures[0] if self.failures else None

    async def stop(self) -> None:
        """Begin shutdown and wait until ``run`` has returned (or raised)."""
        self.shutdown.set()
        with trio.fail_after(STOP_TIMEOUT_S):
            await self.stopped.wait()


StartApp = Callable[..., Awaitable[AppHandle]]


def make_settings(**simulation: Any) -> Settings:
    """Loopback, port 0, no drain delay, a 1 s shutdown grace; ``simulation``
    overrides SimulationSettings.

    No drain delay and the short grace bound the teardown of every test (one
    that leaves a call in flight too); tests that measure the drain set their own.
    """
    return dataclasses.replace(
        Settings(),
        grpc=GrpcSettings(host="127.0.0.1", port=0),
        http=HttpSettings(host="127.0.0.1", port=0),
        simulation=SimulationSettings(**{"default_delay_s": 30.0, **simulation}),
        shutdown_grace_s=1.0,
        drain_delay_s=0.0,
    )


# Never go through an HTTP proxy from the environment: the server is on loopback.
_CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def open_channel(port: int) -> grpc.Channel:
    """An insecure channel to ``127.0.0.1:port``; the caller closes it."""
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=_CHANNEL_OPTIONS)


@contextmanager
def payment_stub(port: int) -> Iterator[Any]:
    """A PaymentServiceStub on a fresh channel to ``port``; the channel closes on exit."""
    channel = open_channel(port)
    try:
        yield payment_pb2_grpc.PaymentServiceStub(channel)
    finally:
        channel.close()


async def call(method: Callable[..., Any], request: Any, **kwargs: Any) -> Any:
    """Run one blocking grpcio call in a thread; return its response."""
    kwargs.setdefault("timeout", CALL_TIMEOUT_S)
    return await trio.to_thread.run_sync(functools.partial(method, request, **kwargs))


async def call_error(method: Callable[..., Any], request: Any) -> grpc.RpcError:
    """Run a call that must fail; return the error (with ``code()`` and ``details()``)."""
    try:
        response = await call(method, request)
    except grpc.RpcError as exc:
        assert_safe_details(exc.details())
        return exc
    pytest.fail(f"expected the call to fail, it answered {response!r}")


# What must never reach a client: tracebacks, heap addresses, reprs, class names.
_CLASS_NAMES = sorted(
    {
        "Traceback",
        "Exception",
        "BaseException",
        "ExceptionGroup",
        "ValueError",
        "KeyError",
        "TypeError",
        "AttributeError",
        "AssertionError",
        "RuntimeError",
        "RpcError",
        "StatusCode.",
        *(cls.__name__ for cls in vars(paysim_errors).values() if isinstance(cls, type)),
    }
)
_HEAP_ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")


def assert_safe_details(details: str | None) -> None:
    """The status message a client sees leaks nothing about the server's insides."""
    assert details, "an error must carry a message"
    assert "Traceback" not in details
    assert not _HEAP_ADDRESS.search(details), details
    assert " object at " not in details, details
    for name in _CLASS_NAMES:
        assert name not in details, f"{name!r} leaked into {details!r}"


def krw(amount: int) -> Money:
    return Money(amount=amount, currency="KRW")


def create_request(**fields: Any) -> Any:
    """A valid CreatePaymentIntentRequest, as the known caller sends it, plus ``fields``."""
    base: dict[str, Any] = {"reservation_id": "rsv_1", "user_id": "user_1", "amount": krw(50_000)}
    base.update(fields)
    return payment_pb2.CreatePaymentIntentRequest(**base)


@dataclass
class HealthWatch:
    """A running ``Health/Watch`` call: statuses arrive on ``statuses``."""

    responses: Any  # grpcio's call object: an iterator that also has cancel()
    statuses: trio.MemoryReceiveChannel[int]
    end_code: list[grpc.StatusCode] = field(default_factory=list)

    async def next_status(self) -> int:
        with trio.fail_after(CALL_TIMEOUT_S):
            return await self.statuses.receive()

    def cancel(self) -> None:
        self.responses.cancel()


@asynccontextmanager
async def open_health_watch(channel: grpc.Channel, service: str = "") -> AsyncIterator[HealthWatch]:
    """Start ``Health/Watch(service)`` in a thread; cancel it and join the thread on exit.

    After exit, ``end_code`` holds the code the stream ended with, as grpcio
    reported it (CANCELLED when we cancelled it ourselves).
    """
    stub = health_pb2_grpc.HealthStub(channel)
    responses = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT_S)
    send, receive = trio.open_memory_channel[int](math.inf)
    watch = HealthWatch(responses, receive)

    def pump() -> grpc.StatusCode:
        try:
            for response in responses:
                trio.from_thread.run_sync(send.send_nowait, response.status)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    async def run_pump() -> None:
        async with send:
            watch.end_code.append(await trio.to_thread.run_sync(pump))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_pump)
        try:
            yield watch
        finally:
            responses.cancel()


async def check_health(channel: grpc.Channel, service: str = "") -> int:
    """``Health/Check(service)``; the status number."""
    stub = health_pb2_grpc.HealthStub(channel)
    response = await call(stub.Check, health_pb2.HealthCheckRequest(service=service))
    return int(response.status)
