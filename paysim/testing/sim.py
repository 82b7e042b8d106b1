"""``run_paysim``: the real application inside the test's trio loop, and ``Paysim``, its handle.

Theory of operation. ``run_paysim`` opens a nursery and starts, in it, the
webhook receiver (``paysim.testing.receiver``) and then ``paysim.app.run``,
the same composition root as ``paysim serve``: store, outbox, webhook
dispatcher, EventBridge publisher (its client is ``EventCapture`` unless the
test passes one), simulator, gRPC and HTTP servers on ephemeral loopback
ports. It yields a ``Paysim`` once both ports listen. On leaving the block the
app drains as on SIGTERM (webhooks still owed are sent to the receiver, which
is stopped last); an exception from the block cancels everything at once.

Everything paysim waits for runs on trio's clock, so under pytest-trio's
``autojump_clock`` (or any ``trio.testing.MockClock``) a 15-minute expiry, a
DELAY scenario and an hours-long webhook retry schedule pass in virtual time.
Stamps (``created_at``, the webhook body's ``timestamp``) stay wall-clock.

Isolation. A ``Paysim`` is a *scope*: its webhooks go to its own inbox path,
its ids (``user_id``, ``reservation_id()``) carry its prefix, and its
``events`` are those of its ids. ``sim.scoped()`` makes a fresh scope on the
same simulator, which is how tests share one (``paysim_session``). The root
scope's prefix is empty: it sees every event.

Resource handling: ``run_paysim`` owns everything it starts, including the
trio-native client's channel, and closes it all before the block returns.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import purerpc
import trio
import trio.testing

from paysim import app
from paysim._proto.proto.common.v1.types_pb2 import Money
from paysim._proto.proto.payment.v1 import payment_grpc, payment_pb2
from paysim.config import Settings
from paysim.domain.forced_outcomes import OUTCOMES, TAG
from paysim.testing.events import EventCapture, EventLog
from paysim.testing.inbox import DEFAULT_TIMEOUT_S, Inbox, status_name
from paysim.testing.receiver import WebhookReceiver
from paysim.testing.settings import build_settings

_POLL_MAX_S = 5.0


@dataclass
class Core:
    """What every scope of one simulator shares."""

    settings: Settings
    running: app.Running
    receiver: WebhookReceiver
    capture: EventCapture
    client: Any  # purerpc PaymentServiceStub
    scopes: itertools.count[int] = field(default_factory=itertools.count)


def _scenario(name: str | int | None) -> Any:
    if name is None:
        return payment_pb2.PAYMENT_SCENARIO_UNSPECIFIED
    if isinstance(name, int):
        return name
    return payment_pb2.PaymentScenario.Value(f"PAYMENT_SCENARIO_{name.upper()}")


class Paysim:
    """A running simulator as one test sees it; see the module docstring.

    ``grpc_target`` (``"127.0.0.1:PORT"``) and ``http_url`` reach the real
    servers; ``client`` is a trio-native stub; ``webhooks`` this scope's
    ``Inbox``; ``events`` its ``EventLog``. ``default_scenario`` (per scope)
    fills the scenario of ``create_intent`` calls that name none.
    """

    def __init__(self, core: Core, prefix: str, default_scenario: str | None = None) -> None:
        self._core = core
        self.prefix = prefix
        self.default_scenario = default_scenario
        scope = prefix.rstrip("-") or "main"
        self.webhooks = Inbox(core.receiver, scope)
        self.events = EventLog(core.capture, prefix)
        self._ids = itertools.count(1)

    # -- where it is ---------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._core.settings

    @property
    def grpc_port(self) -> int:
        return self._core.running.grpc_port

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self._core.running.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self._core.running.http_port}"

    @property
    def client(self) -> Any:
        """A trio-native ``PaymentServiceStub`` (purerpc); its channel closes with the simulator."""
        return self._core.client

    @property
    def user_id(self) -> str:
        return f"{self.prefix}user"

    def reservation_id(self) -> str:
        """A fresh reservation id with this scope's prefix."""
        return f"{self.prefix}rsv-{next(self._ids)}"

    def scoped(self, name: str = "t", default_scenario: str | None = None) -> Paysim:
        """A fresh, isolated scope on the same simulator."""
        prefix = f"{name}{next(self._core.scopes)}{secrets.token_hex(3)}-"
        return Paysim(self._core, prefix, default_scenario)

    # -- driving it ----------------------------------------------------------
    async def create_intent(
        self,
        amount: int = 50_000,
        *,
        scenario: str | int | None = None,
        outcome: str | None = None,
        **fields: Any,
    ) -> Any:
        """CreatePaymentIntent with this scope's ids and webhook URL; the response.

        ``scenario`` (``"approve"``, ``"fail"``, ``"delay"``, ``"random"``,
        ``"timeout"``) defaults to the scope's ``default_scenario``;
        ``outcome`` forces one (a key of ``paysim.domain.forced_outcomes.
        OUTCOMES``: ``"insufficient_funds"``, ``"pg_timeout"``...). ``fields``
        are the request's own, overriding these.
        """
        request = payment_pb2.CreatePaymentIntentRequest(
            reservation_id=fields.pop("reservation_id", None) or self.reservation_id(),
            user_id=fields.pop("user_id", None) or self.user_id,
            amount=fields.pop("amount_money", None) or Money(amount=amount, currency="KRW"),
            scenario=_scenario(scenario if scenario is not None else self.default_scenario),
            webhook_url=fields.pop("webhook_url", None) or self.webhooks.url,
            **fields,
        )
        if outcome is not None:
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r}; one of {sorted(OUTCOMES)}")
            request.metadata.tags[TAG] = outcome
        return await self.client.CreatePaymentIntent(request)

    async def payment(self, payment_id: str) -> Any:
        """The payment as GetPaymentStatus answers it (``payment_pb2.Payment``)."""
        request = payment_pb2.GetPaymentStatusRequest(payment_intent_id=payment_id)
        return (await self.client.GetPaymentStatus(request)).payment

    async def wait_status(
        self, payment_id: str, status: str | int, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> Any:
        """Wait until the payment has ``status``; the payment. ``TimeoutError`` after the timeout.

        Woken by every event the simulator publishes, and polled besides
        (doubling up to 5 s of trio's clock) when events do not reach us.
        """
        wanted = payment_pb2.PaymentStatus.Value(status_name(status) or "")
        interval = 0.05
        with trio.move_on_after(timeout_s):
            while True:
                payment = await self.payment(payment_id)
                if payment.status == wanted:
                    return payment
                with trio.move_on_after(interval):
                    await self._core.capture.feed.changed()
                interval = min(interval * 2, _POLL_MAX_S)
        raise TimeoutError(
            f"{payment_id} did not reach {status_name(status)} within {timeout_s:g} s"
        )

    async def force(self, payment_id: str, status: str | int) -> Any:
        """Make the simulated PG answer ``status`` now (SimulateWebhook with force_trigger)."""
        wanted: Any = payment_pb2.PaymentStatus.Value(status_name(status) or "")
        request = payment_pb2.SimulateWebhookRequest(
            payment_intent_id=payment_id, target_status=wanted, force_trigger=True
        )
        return await self.client.SimulateWebhook(request)

    def seed(self, n: int) -> None:
        """Restart the simulator's randomness (RANDOM scenario) from ``n``."""
        self._core.running.service.reseed(n)

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of trio's clock pass; needs a ``trio.testing.MockClock``.

        Under ``autojump_clock`` it sleeps (virtual time). With a MockClock that
        does not jump by itself (``paysim.testing.running()``'s, or a manual
        one) it jumps the clock and waits until every task is blocked again.
        """
        clock = trio.lowlevel.current_clock()
        if not isinstance(clock, trio.testing.MockClock):
            raise TypeError(
                "advance needs a virtual clock: pytest-trio's autojump_clock, "
                "trio.testing.MockClock, or paysim.testing.running()"
            )
        if clock.autojump_threshold != math.inf:
            await trio.sleep(seconds)
            return
        clock.jump(seconds)
        await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def run_paysim(
    settings: Settings | None = None,
    *,
    events_client: Any = None,
    **overrides: object,
) -> AsyncIterator[Paysim]:
    """Run paysim in this trio loop; yield the root ``Paysim``; drain and stop on exit.

    ``overrides`` are settings named like their environment variables, lower
    case (``default_scenario="fail"``; ``paysim.testing.settings``), or pass a
    whole ``Settings``. ``events_client`` (a boto3 ``events`` client, e.g. on
    moto) receives the events instead of ``sim.events``.
    """
    if settings is not None and overrides:
        raise TypeError("pass either settings or keyword overrides, not both")
    settings = settings if settings is not None else build_settings(**overrides)
    capture = EventCapture()
    receiver = WebhookReceiver(settings.webhook.secrets)
    shutdown, stopped = trio.Event(), trio.Event()

    async def serve(*, task_status: trio.TaskStatus[app.Running]) -> None:
        try:
            await app.run(
                settings,
                shutdown=shutdown,
                events_client=events_client if events_client is not None else capture,
                task_status=task_status,
            )
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(receiver.serve)
            running = await nursery.start(serve)
            async with purerpc.insecure_channel("127.0.0.1", running.grpc_port) as channel:
                client = payment_grpc.PaymentServiceStub(channel)
                yield Paysim(Core(settings, running, receiver, capture, client), "")
        except BaseException:
            nursery.cancel_scope.cancel()  # the test failed: no graceful drain
            raise
        shutdown.set()  # drain as on SIGTERM; the receiver still takes what is owed
        await stopped.wait()
        nursery.cancel_scope.cancel()


__all__ = ["Paysim", "run_paysim"]
