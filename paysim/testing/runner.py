"""The thread runner: ``with paysim.testing.running() as sim:`` for synchronous and asyncio tests.

Theory of operation. ``running`` starts a daemon thread that runs
``trio.run`` with a ``MockClock(rate=1.0)``: time flows as real time, and
``sim.advance(900)`` jumps it forward at once, so a 15-minute expiry still
takes milliseconds. Inside, ``run_paysim`` serves as it does for trio tests;
the thread hands back the root ``Paysim`` and trio's token, and then waits
for the stop request. ``SyncPaysim`` is the same handle with blocking
methods: each runs in the simulator's loop through ``trio.from_thread``.
Clients call the real servers: ``grpc_stub(sim.grpc_target)`` (grpcio) or,
from asyncio, ``aio_stub(sim.grpc_target)``.

Resource handling: ``running`` owns the thread and the simulator. Leaving the
block drains and stops the simulator and joins the thread; an exception the
simulator raised is raised there. grpcio channels made by ``sim.stub()`` are
closed first.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio
import trio.testing

from paysim.testing.clients import grpc_stub
from paysim.testing.events import Event
from paysim.testing.inbox import DEFAULT_TIMEOUT_S, Delivery, Inbox
from paysim.testing.sim import Paysim, run_paysim

T = TypeVar("T")
_START_TIMEOUT_S = 30.0


class SyncInbox:
    """``Inbox`` with blocking waits; misbehaviour is set in the simulator's loop."""

    def __init__(self, inbox: Inbox, call: Callable[..., Any]) -> None:
        self._inbox, self._call = inbox, call
        self.url = inbox.url

    @property
    def received(self) -> list[Delivery]:
        return list(self._call(_value, lambda: self._inbox.received))

    def next(
        self,
        payment_id: str,
        status: str | int | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Delivery:
        wait = functools.partial(self._inbox.next, timeout_s=timeout_s)
        delivery: Delivery = self._call(wait, payment_id, status)
        return delivery

    def fail(
        self, status: int = 503, *, times: int | None = None, for_s: float | None = None
    ) -> None:
        self._call(_value, lambda: self._inbox.fail(status, times=times, for_s=for_s))

    def slow(self, delay_s: float, *, for_s: float | None = None) -> None:
        self._call(_value, lambda: self._inbox.slow(delay_s, for_s=for_s))

    def go_away(self, *, for_s: float | None = None) -> None:
        self._call(_value, lambda: self._inbox.go_away(for_s=for_s))

    def recover(self) -> None:
        self._call(_value, self._inbox.recover)


class SyncEvents:
    def __init__(self, sim: Paysim, call: Callable[..., Any]) -> None:
        self._sim, self._call = sim, call

    @property
    def published(self) -> list[Event]:
        return list(self._call(_value, lambda: self._sim.events.published))

    def next(
        self,
        payment_id: str,
        status: str | int | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Event:
        wait = functools.partial(self._sim.events.next, timeout_s=timeout_s)
        event: Event = self._call(wait, payment_id, status)
        return event


async def _value(fn: Callable[[], T]) -> T:
    return fn()


class SyncPaysim:
    """A simulator on the runner's thread, with blocking methods; see ``Paysim``."""

    def __init__(self, sim: Paysim, token: trio.lowlevel.TrioToken) -> None:
        self._sim, self._token = sim, token
        self.webhooks = SyncInbox(sim.webhooks, self._call)
        self.events = SyncEvents(sim, self._call)
        self.grpc_target, self.http_url = sim.grpc_target, sim.http_url
        self.prefix, self.user_id = sim.prefix, sim.user_id
        self.settings = sim.settings
        self._channels: list[Any] = []

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    @property
    def default_scenario(self) -> str | None:
        return self._sim.default_scenario

    @default_scenario.setter
    def default_scenario(self, name: str | None) -> None:
        self._sim.default_scenario = name

    def reservation_id(self) -> str:
        return self._sim.reservation_id()

    def scoped(self, name: str = "t", default_scenario: str | None = None) -> SyncPaysim:
        return SyncPaysim(self._sim.scoped(name, default_scenario), self._token)

    def stub(self) -> Any:
        """A grpcio ``PaymentServiceStub``; its channel closes with this handle (``close``)."""
        stub, channel = grpc_stub(self.grpc_target)
        self._channels.append(channel)
        return stub

    def close(self) -> None:
        """Close the grpcio channels ``stub`` made."""
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def create_intent(self, amount: int = 50_000, **kwargs: Any) -> Any:
        return self._call(functools.partial(self._sim.create_intent, amount, **kwargs))

    def payment(self, payment_id: str) -> Any:
        return self._call(self._sim.payment, payment_id)

    def wait_status(
        self, payment_id: str, status: str | int, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> Any:
        wait = functools.partial(self._sim.wait_status, timeout_s=timeout_s)
        return self._call(wait, payment_id, status)

    def force(self, payment_id: str, status: str | int) -> Any:
        return self._call(self._sim.force, payment_id, status)

    def seed(self, n: int) -> None:
        self._call(_value, lambda: self._sim.seed(n))

    def advance(self, seconds: float) -> None:
        """Jump the simulator's clock ``seconds`` forward; return when it has caught up."""
        self._call(self._sim.advance, seconds)


@contextmanager
def running(**overrides: Any) -> Iterator[SyncPaysim]:
    """Run paysim on a background thread (real time, ``advance`` jumps); yield a ``SyncPaysim``.

    ``overrides`` are ``run_paysim``'s (settings named like their variables).
    """
    handed: queue.Queue[tuple[Paysim, trio.lowlevel.TrioToken] | BaseException] = queue.Queue()
    failure: list[BaseException] = []
    stop: list[trio.Event] = []

    async def main() -> None:
        stop.append(trio.Event())
        async with run_paysim(**overrides) as sim:
            handed.put((sim, trio.lowlevel.current_trio_token()))
            await stop[0].wait()

    def thread_main() -> None:
        try:
            trio.run(main, clock=trio.testing.MockClock(rate=1.0))
        except BaseException as exc:
            failure.append(exc)
            handed.put(exc)

    thread = threading.Thread(target=thread_main, name="paysim-testing", daemon=True)
    thread.start()
    got = handed.get(timeout=_START_TIMEOUT_S)
    if isinstance(got, BaseException):
        thread.join()
        raise got
    sim, token = got
    handle = SyncPaysim(sim, token)
    try:
        yield handle
    finally:
        handle.close()
        trio.from_thread.run_sync(stop[0].set, trio_token=token)
        thread.join()
    if failure:
        raise failure[0]


__all__ = ["SyncPaysim", "running"]
