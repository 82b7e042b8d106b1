"""``benchmarks.lifecycle``'s cycle case, small: what it reports, and what it leaves.

The goal's figure is a benchmark's (``--cases cycle --churn 1000000``), not a
test's; this checks the harness on 3,000 payments: every payment swept, the RSS
readings taken, and nothing of the storm left alive in the harness.
"""

from __future__ import annotations

import structlog

from paysim.benchmarks.lifecycle import memory


def test_the_cycle_sweeps_everything_and_reports_its_readings() -> None:
    payments = 3_000
    result = memory.memory_cycle(payments)
    assert result.stored_at_end == 0
    # The readings are there; their sizes are not checked: this process (the
    # test run's) has room to spare from earlier tests, so RSS need not move.
    assert result.idle_mib is not None
    assert result.rss_pending_abs_mib is not None
    assert result.rss_after_cycle_abs_mib is not None
    # The payments are gone, not just their count: fewer blocks left than one
    # per payment (each pending payment is some thirty).
    assert result.blocks_after_retention is not None
    assert result.blocks_after_retention < payments


async def test_a_call_in_a_task_of_its_own_leaves_its_context_behind() -> None:
    async def binds() -> int:
        structlog.contextvars.bind_contextvars(payment_id="pay_storm")
        return 7

    assert await memory._in_a_task(binds) == 7
    assert "payment_id" not in structlog.contextvars.get_contextvars()
