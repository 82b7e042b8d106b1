"""A reservation flow tested against paysim, in virtual time.

The README's example ("Testing your service with paysim"), run by CI as it is.
"""

from typing import Any

import pytest
import trio

pytestmark = pytest.mark.trio


class Reservations:
    """The service under test, in miniature: a seat is held until its payment settles."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}

    def on_webhook(self, payload: dict[str, Any]) -> None:
        outcome = {
            "PAYMENT_STATUS_COMPLETED": "confirmed",
            "PAYMENT_STATUS_FAILED": "released",
            "PAYMENT_STATUS_EXPIRED": "cancelled",
        }
        if payload["status"] in outcome and self.state[payload["reservation_id"]] == "held":
            self.state[payload["reservation_id"]] = outcome[payload["status"]]


async def test_a_paid_reservation_is_confirmed(paysim: Any, autojump_clock: Any) -> None:
    reservations = Reservations()
    reservation_id = paysim.reservation_id()
    reservations.state[reservation_id] = "held"

    intent = await paysim.create_intent(120_000, reservation_id=reservation_id)
    hook = await paysim.webhooks.next(intent.payment_intent_id, status="completed")
    reservations.on_webhook(hook.payload)

    assert reservations.state[reservation_id] == "confirmed"
    assert hook.styles == ("legacy",)  # the signature was verified


@pytest.mark.paysim(default_scenario="timeout")
async def test_an_unpaid_reservation_is_cancelled_after_15_minutes(
    paysim: Any, autojump_clock: Any
) -> None:
    reservations = Reservations()
    reservation_id = paysim.reservation_id()
    reservations.state[reservation_id] = "held"
    start = trio.current_time()

    intent = await paysim.create_intent(120_000, reservation_id=reservation_id)
    hook = await paysim.webhooks.next(intent.payment_intent_id, timeout_s=3600)
    reservations.on_webhook(hook.payload)

    assert reservations.state[reservation_id] == "cancelled"
    assert trio.current_time() - start == pytest.approx(15 * 60)  # virtual: no real wait


@pytest.mark.paysim(default_scenario="fail")
async def test_a_webhook_that_arrives_twice_settles_once(paysim: Any, autojump_clock: Any) -> None:
    reservations = Reservations()
    reservation_id = paysim.reservation_id()
    reservations.state[reservation_id] = "held"

    intent = await paysim.create_intent(120_000, reservation_id=reservation_id)
    first = await paysim.webhooks.next(intent.payment_intent_id, status="failed")
    await paysim.force(intent.payment_intent_id, "failed")  # paysim sends it again
    again = await paysim.webhooks.next(intent.payment_intent_id, status="failed")
    for hook in (first, again):
        reservations.on_webhook(hook.payload)

    assert reservations.state[reservation_id] == "released"
    event = await paysim.events.next(intent.payment_intent_id, status="failed")
    assert event.detail["reservation_id"] == reservation_id  # on the event bus too
