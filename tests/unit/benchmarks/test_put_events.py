"""``benchmarks.put_events``, small: both HTTP paths reach the stand-in and are measured."""

from __future__ import annotations

import json

import pytest

from paysim.benchmarks import put_events
from paysim.delivery.event_batches import MAX_BATCH_BYTES, MAX_BATCH_ENTRIES


def test_the_batch_is_a_full_put_events_batch_of_the_contract_entries() -> None:
    batch = put_events.entries()
    assert len(batch) == MAX_BATCH_ENTRIES
    assert len({json.loads(e["Detail"])["payment_id"] for e in batch}) == MAX_BATCH_ENTRIES
    assert sum(len(json.dumps(e)) for e in batch) < MAX_BATCH_BYTES


def test_a_short_run_prints_both_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert put_events.main(["--calls", "5", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "urllib3 (botocore's)" in out
    assert "aws_http.LeanSender" in out
