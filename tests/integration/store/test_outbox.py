"""Which status changes the shared store keeps for delivery (its outbox), and when it forgets them.

A change goes into the outbox only if some channel will announce it
(``Outbox.announces``): a payment without a webhook URL on a replica without
an event bus has nothing to deliver after a crash, so nothing is kept for it,
and nothing has to be forgotten later. The Redis tests use a real
``redis-server`` and the real service; no timer fires (the payments wait
600 s), every change comes from a cancel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import coredis
import pytest
import trio
import trio.testing

from paysim.adapters import payment_codec
from paysim.adapters.redis_store import RedisStore, open_redis_store
from paysim.config import SimulationSettings, StoreSettings
from paysim.domain.models import CancelCommand, PaymentStatus, StatusChange
from paysim.observability.metrics import Metrics
from paysim.outbox import Channel, Outbox
from paysim.replica import Replica
from paysim.service import PaymentService, ServiceParts
from paysim.simulator import Simulator
from tests.integration.store.test_redis_store import expire_lease
from tests.redis_fixtures import redis_server, redis_settings  # noqa: F401 - fixtures
from tests.unit.domain.test_domain import make_payment
from tests.unit.service.test_service import intent


class WebhookLike:
    """A channel that, like the webhook dispatcher, announces only what has a URL.

    It finishes URL-less changes at once (as the dispatcher does) and holds the
    rest until ``finish``.
    """

    def __init__(self) -> None:
        self.outbox: Outbox | None = None
        self.held: list[str] = []

    def announces(self, change: StatusChange) -> bool:
        return bool(change.payment.webhook_url)

    async def notify(self, change: StatusChange) -> None:
        assert self.outbox is not None
        if self.announces(change):
            self.held.append(change.event_id)
        else:
            self.outbox.channel_done(change.event_id)

    def finish(self) -> None:
        assert self.outbox is not None
        while self.held:
            self.outbox.channel_done(self.held.pop())


class Everything(WebhookLike):
    """Announces every change (an event bus), finishing each only on ``finish``."""

    def announces(self, change: StatusChange) -> bool:
        return True


def outbox_of(*channels: WebhookLike, forget: Callable[[str], None]) -> Outbox:
    outbox = Outbox([Channel(f"channel{i}", c) for i, c in enumerate(channels)], forget=forget)
    for channel in channels:
        channel.outbox = outbox
    return outbox


def change(event_id: str, webhook_url: str = "") -> StatusChange:
    payment = make_payment(status=PaymentStatus.CANCELLED, webhook_url=webhook_url)
    return StatusChange(event_id, payment, PaymentStatus.PENDING, 100.0)


# -- the outbox's tracking -----------------------------------------------------------


async def test_a_change_no_channel_announces_is_not_tracked() -> None:
    finished: list[str] = []
    webhooks = WebhookLike()
    outbox = outbox_of(webhooks, forget=finished.append)
    assert not outbox.announces(change("evt_1"))
    await outbox.notify(change("evt_1"))
    assert finished == []  # nothing to forget: the store never kept it
    assert outbox.unfinished == 0


async def test_an_announced_change_finishes_when_every_channel_is_done() -> None:
    finished: list[str] = []
    webhooks, events = WebhookLike(), Everything()
    outbox = outbox_of(webhooks, events, forget=finished.append)
    # No URL: the webhook channel is done at once, the event bus still holds it.
    await outbox.notify(change("evt_1"))
    await outbox.notify(change("evt_2", webhook_url="https://example.com/hook"))
    assert finished == []
    assert outbox.unfinished == 2
    events.finish()
    assert finished == ["evt_1"]  # evt_2's webhook is still out
    webhooks.finish()
    assert sorted(finished) == ["evt_1", "evt_2"]
    assert outbox.unfinished == 0


async def test_a_taken_over_change_is_announced_again_or_forgotten_at_once() -> None:
    finished: list[str] = []
    webhooks = WebhookLike()
    outbox = outbox_of(webhooks, forget=finished.append)
    assert not await outbox.take_over(change("evt_1"))  # no URL: nothing here announces it
    assert finished == ["evt_1"]
    assert await outbox.take_over(change("evt_2", webhook_url="https://example.com/hook"))
    assert webhooks.held == ["evt_2"]
    assert outbox.delivering("evt_2")
    webhooks.finish()
    assert finished == ["evt_1", "evt_2"]
    assert not outbox.delivering("evt_2")


async def test_flush_waits_for_every_channel_together_and_undelivered_names_each(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flushed: list[tuple[str, float]] = []

    def flusher(name: str, delay_s: float) -> Callable[[], Awaitable[None]]:
        async def flush() -> None:
            await trio.sleep(delay_s)
            flushed.append((name, trio.current_time()))

        return flush

    outbox = Outbox(
        [
            Channel("webhook", WebhookLike(), flusher("webhook", 2.0), lambda: ["pay_1"]),
            Channel("event", Everything(), flusher("event", 1.0), lambda: ["pay_1", "pay_2"]),
        ]
    )
    await outbox.flush()
    assert flushed == [("event", 1.0), ("webhook", 2.0)]  # together, not one after the other
    assert outbox.undelivered() == [("webhook", ["pay_1"]), ("event", ["pay_1", "pay_2"])]


# -- with the Redis store ----------------------------------------------------------


@dataclass
class ReplicaUnderTest:
    store: RedisStore
    service: PaymentService
    outbox: Outbox
    finished: list[str]


@asynccontextmanager
async def replica(
    settings: StoreSettings, name: str, *channels: WebhookLike
) -> AsyncIterator[ReplicaUnderTest]:
    """The real service on the Redis store, its changes announced through ``channels``."""
    metrics = Metrics()
    finished: list[str] = []
    async with (
        open_redis_store(
            dataclasses.replace(settings, replica_id=name), retention_s=60.0, time_scale=1.0
        ) as store,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(store.run)

        def forget(event_id: str) -> None:
            finished.append(event_id)
            store.outbox_done(event_id)

        outbox = outbox_of(*channels, forget=forget)
        service = PaymentService(
            ServiceParts(
                store=store,
                simulator=Simulator(nursery, 100, metrics.pending_changed),
                notifier=outbox,
                metrics=metrics,
            ),
            SimulationSettings(default_delay_s=600.0),
        )
        yield ReplicaUnderTest(store, service, outbox, finished)
        nursery.cancel_scope.cancel()


async def outbox(settings: StoreSettings, name: str) -> dict[str, bytes]:
    client = coredis.Redis.from_url(settings.url or "", decode_responses=False)
    async with client:
        kept: dict[bytes, bytes] = await client.hgetall("{" + settings.key_prefix + "}:ob:" + name)
    return {k.decode(): v for k, v in kept.items()}


async def cancel(service: PaymentService, webhook_url: str) -> str:
    created = await service.create_intent(intent(webhook_url=webhook_url))
    pid = created.payment.payment_intent_id
    await service.cancel_payment(CancelCommand(pid, "test", None, ""))
    return pid


async def test_only_changes_something_announces_are_kept_for_delivery(
    redis_settings: StoreSettings,  # noqa: F811
) -> None:
    webhooks = WebhookLike()
    async with replica(redis_settings, "a", webhooks) as a:
        await cancel(a.service, webhook_url="")
        await cancel(a.service, webhook_url="https://example.com/hook")
        kept = await outbox(redis_settings, "a")
        urls = [payment_codec.decode_change(v).payment.webhook_url for v in kept.values()]
        assert urls == ["https://example.com/hook"]
        assert list(kept) == webhooks.held
        webhooks.finish()
        await a.store.get("pay_none")  # the posted forget went out before this returned
        assert await outbox(redis_settings, "a") == {}
        assert a.finished == list(kept)  # and only what was kept was forgotten


@pytest.mark.parametrize("announced", [False, True])
async def test_a_taken_over_change_nothing_here_announces_is_forgotten(
    redis_settings: StoreSettings,  # noqa: F811
    announced: bool,
) -> None:
    async with replica(redis_settings, "doomed", Everything()) as doomed:
        await doomed.store.maintain(0.0)
        await cancel(doomed.service, webhook_url="")
        (event_id,) = await outbox(redis_settings, "doomed")
    # The doomed replica never finished it; its lease ends; "a" takes the change over.
    await expire_lease(redis_settings, "doomed")
    channel = Everything() if announced else WebhookLike()
    async with replica(redis_settings, "a", channel) as a:
        async with trio.open_nursery() as nursery:
            # Started once its first round (renew, take over, announce) is done.
            await nursery.start(Replica(a.store, a.service, a.outbox, 3600.0).run)
            nursery.cancel_scope.cancel()
        await a.store.get("pay_none")  # any posted forget went out before this returned
        kept = await outbox(redis_settings, "a")
        if announced:
            assert list(kept) == channel.held == [event_id]  # announced again, until done
        else:
            assert kept == {}  # "a" has no channel for it: forgotten at once
