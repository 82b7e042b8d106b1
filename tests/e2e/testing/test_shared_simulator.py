"""Many tests on one simulator: no cross-talk.

What a test costs is measured by ``python -m paysim.benchmarks.testing_overhead``
(start and stop of a per-test simulator) and ``pytest --durations=0`` on this file
(the 200-test run's wall time), not asserted here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from paysim.testing import run_paysim

ROOT = Path(__file__).parents[3]

_ONE_TEST = textwrap.dedent(
    """
    def test_{n}(paysim_session):
        intent = paysim_session.create_intent({n} + 1)
        paysim_session.force(intent.payment_intent_id, "completed")
        hook = paysim_session.webhooks.next(intent.payment_intent_id, "completed", timeout_s=10)
        assert hook.payload["amount"] == {n} + 1
        event = paysim_session.events.next(intent.payment_intent_id, "completed", timeout_s=10)
        assert event.detail["user_id"] == paysim_session.user_id
        seen = {{d.payment_id for d in paysim_session.webhooks.received}}
        seen |= {{e.payment_id for e in paysim_session.events.published}}
        assert seen == {{intent.payment_intent_id}}, "another test's payment leaked in"
    """
)


def test_200_tests_share_one_session_simulator_without_cross_talk(tmp_path: Path):
    tests = "".join(_ONE_TEST.format(n=n) for n in range(200))
    (tmp_path / "test_many.py").write_text(tests)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["paysim.testing"]\n')
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "200 passed" in result.stdout


async def test_200_concurrent_scopes_see_only_their_own(autojump_clock):
    async with run_paysim() as root:
        found: dict[str, tuple[set[str], set[str]]] = {}

        async def one_test(n: int) -> None:
            sim = root.scoped(f"c{n}")
            intent = await sim.create_intent(1_000 + n)
            await sim.webhooks.next(intent.payment_intent_id, "completed")
            await sim.events.next(intent.payment_intent_id, "completed")
            await trio.sleep(1)  # the others finish meanwhile
            hooks = {d.payment_id for d in sim.webhooks.received}
            found[intent.payment_intent_id] = (hooks, {e.payment_id for e in sim.events.published})

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(one_test, n)
    assert len(found) == 200
    for payment_id, (hooks, events) in found.items():
        assert hooks == events == {payment_id}


async def test_a_per_test_simulator_starts_and_stops_again_and_again():
    for _ in range(15):
        async with run_paysim() as sim:
            assert sim.grpc_target
