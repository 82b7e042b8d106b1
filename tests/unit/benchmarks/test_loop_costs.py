"""``benchmarks.loop_costs``, small: each case runs and measures what it names."""

from __future__ import annotations

import pytest

from paysim.benchmarks import loop_costs


@pytest.mark.parametrize("name", sorted(loop_costs.READERS))
@pytest.mark.parametrize("ready", [True, False])
async def test_every_reader_reads_each_message_whole(name: str, ready: bool) -> None:
    assert await loop_costs.read_cost(loop_costs.READERS[name], 50, ready=ready) > 0


def test_the_clock_case_fires_every_timer() -> None:
    cost, fired = loop_costs.clock_cost(200)
    assert fired == 200
    assert cost > 0


async def test_the_webhook_case_delivers_each_webhook() -> None:
    assert await loop_costs.webhook_cost(20) > 0  # raises if one is not answered 200
