"""The per-page queue: coalesces by key, drops the oldest when full and says how many."""

from __future__ import annotations

import trio

from paysim.console.hub import Hub, Update


def test_a_newer_update_for_a_queued_key_replaces_it() -> None:
    hub = Hub(max_pending=4)
    page = hub.subscribe()
    hub.publish("pay_1", "payment", '{"status":"PENDING"}')
    hub.publish("pay_2", "payment", "{}")
    hub.publish("pay_1", "payment", '{"status":"COMPLETED"}')
    updates, dropped = page.take()
    assert updates == [Update("payment", '{"status":"COMPLETED"}'), Update("payment", "{}")]
    assert dropped == 0


def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    hub = Hub(max_pending=2)
    page = hub.subscribe()
    for i in range(5):
        hub.publish(f"pay_{i}", "payment", str(i))
    updates, dropped = page.take()
    assert [u.data for u in updates] == ["3", "4"]
    assert dropped == 3
    assert page.take() == ([], 0)


def test_nothing_is_queued_for_a_page_that_left() -> None:
    hub = Hub()
    page = hub.subscribe()
    hub.unsubscribe(page)
    hub.publish("pay_1", "payment", "{}")
    assert hub.subscribers == 0
    assert page.take() == ([], 0)


async def test_publish_wakes_a_waiting_page() -> None:
    hub = Hub()
    page = hub.subscribe()
    async with trio.open_nursery() as nursery:
        woke = trio.Event()

        async def wait() -> None:
            await page.wait()
            woke.set()

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set()
        hub.publish("overview", "overview", "{}")
        await woke.wait()
