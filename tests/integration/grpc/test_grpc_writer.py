"""The connection's writer: one round per answer, and only when there is something to send.

Counted in task steps (trio's Instrument), not timed: a unary call's answer
is one writer round (data and trailers in one write), and a read that queues
nothing (the client's WINDOW_UPDATE for our answer, say) does not wake the
writer at all. Before, every read woke it and every write ended in a second
scheduler round trip: about two and a half writer steps a call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from tests.h2_client import RawClient
from tests.integration.grpc.test_grpc_transport import ECHO, OK, echo_body, settle, start_paysim


class _WriterSteps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("Connection._writer"):
            self.steps += 1


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


CALLS = 20


async def test_each_unary_answer_is_one_writer_round(nursery: trio.Nursery) -> None:
    served = await start_paysim(nursery)
    client = await RawClient.connect(nursery, served.port)
    await client.call(ECHO, echo_body("warm-up"))  # SETTINGS and their ACKs go first
    await settle()
    counter = _WriterSteps()
    trio.lowlevel.add_instrument(counter)
    try:
        for i in range(CALLS):
            with trio.fail_after(5):
                response = await client.call(ECHO, echo_body(f"call-{i}"))
            assert response.status == OK
            await settle()  # the client's WINDOW_UPDATE for the answer is read, too
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert counter.steps == CALLS
