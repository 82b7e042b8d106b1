"""Issue 17's chaos run at the scale it asks for: ``paysim chaos --caller --count 10000``.

A naive caller (no idempotency keys, starts over on UNAVAILABLE or INTERNAL) and
a correct caller each pay 10,000 reservations, 20,000 in all, against a real
``paysim serve`` child. The run goes through ``caller_storm.toml``: latency
before and after the work, errors with every code, lost answers in both modes,
and recovery. The reconciliation report must count the naive caller's double
charges exactly (what the driver knows it caused, what the payments say) and
none for the correct one.

The timeline lives in its own file so that a new phase kind is one more
``[[phases]]`` table.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import trio

ROOT = Path(__file__).parents[2]
TIMELINE = Path(__file__).with_name("caller_storm.toml")
COUNT = 10_000


async def test_10000_payments_per_caller_through_every_phase_are_reconciled_exactly(
    tmp_path: Path,
):
    out = tmp_path / "caller.json"
    cmd = [sys.executable, "-m", "paysim", "chaos", "--caller", "--timeline", str(TIMELINE)]
    cmd += ["--count", str(COUNT), "--seed", "17", "--json", str(out)]
    cmd += ["--concurrency", "48", "--channels", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    with trio.fail_after(300):
        done = await trio.run_process(
            cmd, env=env, check=False, capture_stdout=True, capture_stderr=True
        )
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = json.loads(out.read_text())
    naive, correct = result["turns"]
    assert (naive["caller"], correct["caller"]) == ("naive", "correct")
    for turn in (naive, correct):
        assert turn["reservations"] == COUNT
        assert turn["paid"] == COUNT, turn
        # Every error code and both kinds of lost answer reached the caller.
        for code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL"):
            assert turn["codes"].get(code, 0) > 0, (code, turn["codes"])
    assert naive["caused"]["double_charges"] > 0
    assert naive["report"] == naive["caused"] == naive["payments"]
    assert correct["caused"] == correct["report"] == correct["payments"]
    assert correct["report"] == {"double_charges": 0, "extra_captures": 0}
    assert correct["lost_answers_reported"] > naive["lost_answers_reported"] > 0
    assert b"FAIL" not in done.stdout
    print(
        f"\n10,000-payment caller run: {seconds:.1f} s; turns {naive['seconds']} s and "
        f"{correct['seconds']} s; naive double charges {naive['report']}"
    )
