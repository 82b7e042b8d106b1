"""CPU per PutEvents call (10 entries), botocore's HTTP session against ``aws_http``.

    python -m paysim.benchmarks.put_events [--calls 2000] [--rounds 3]

Starts the delivery benchmark's receiver (its PutEvents stand-in, which
accepts every entry) on a free port and calls ``put_events`` with 10 of the
contract's entries, the batch the publisher sends under load, through two
clients made by ``make_client``: one as botocore sends (urllib3), one with
``ClientTuning(lean_http=True)`` (``paysim.adapters.aws_http``, what the
server's publisher uses). The rounds alternate between them (the machine
drifts); each figure is the calling thread's CPU time per call, so the
receiver's work is not in it. A figure for comparing, never a threshold.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from paysim.adapters.aws import ClientTuning, make_client
from paysim.config import AwsSettings
from paysim.delivery.event_batches import MAX_BATCH_ENTRIES
from paysim.domain.events import event_entry
from paysim.domain.models import (
    Metadata,
    Money,
    Outcome,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Scenario,
    StatusChange,
)
from paysim.loadgen.ports import wait_port
from paysim.loadgen.spawn import free_port

BATCH = MAX_BATCH_ENTRIES  # what the publisher sends under load
_AWS = AwsSettings(region="us-east-1", event_bus_name="paysim-bench", event_source="paysim.bench")
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


def change(i: int, webhook_url: str = "http://127.0.0.1:9/hook") -> StatusChange:
    """Payment number ``i`` completed: an ordinary change, as a load test makes them."""
    at = 1_790_000_000.0 + i
    payment = Payment(
        payment_intent_id=f"pay_{i:024d}",
        reservation_id=f"rsv_{i}",
        user_id="user_1",
        amount=Money(100_000, "KRW"),
        method=PaymentMethod.CREDIT_CARD,
        scenario=Scenario.APPROVE,
        webhook_url=webhook_url,
        metadata=Metadata(),
        client_secret="cs",
        outcome=Outcome(PaymentStatus.COMPLETED, 2.0),
        status=PaymentStatus.COMPLETED,
        created_at=at,
        updated_at=at,
        expires_at=at + 900,
    )
    return StatusChange(f"evt_{i}", payment, PaymentStatus.PENDING, at)


def entries() -> list[dict[str, Any]]:
    """``BATCH`` PutEvents entries as the publisher makes them."""
    return [
        event_entry(change(i), source=_AWS.event_source, bus_name=_AWS.event_bus_name)
        for i in range(BATCH)
    ]


def cpu_per_call(client: Any, batch: list[dict[str, Any]], calls: int) -> float:
    """µs of this thread's CPU per ``put_events`` call; every entry must be accepted."""
    started = time.thread_time()
    for _ in range(calls):
        answer = client.put_events(Entries=batch)
        if answer.get("FailedEntryCount"):
            raise SystemExit(f"the stand-in refused entries: {answer}")
    return (time.thread_time() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        receiver_cmd = [sys.executable, "-m", "paysim.benchmarks.delivery", "--receiver"]
        receiver_cmd += [str(port), str(Path(workdir) / "records")]
        receiver = subprocess.Popen(receiver_cmd)
        try:
            wait_port(port)
            os.environ.update(_CREDENTIALS)
            endpoint = f"http://127.0.0.1:{port}"
            clients = {
                "urllib3 (botocore's)": make_client("events", _AWS, endpoint),
                "aws_http.LeanSender": make_client(
                    "events", _AWS, endpoint, tuning=ClientTuning(lean_http=True)
                ),
            }
            batch = entries()
            for client in clients.values():  # connections open, caches warm
                cpu_per_call(client, batch, 50)
            figures: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.rounds):
                for name, client in clients.items():
                    figures[name].append(cpu_per_call(client, batch, args.calls))
        finally:
            receiver.terminate()
            receiver.wait(timeout=10)
    print(f"PutEvents of {BATCH} entries, {args.calls} calls x {args.rounds} rounds")
    print(f"{'HTTP path':24} {'median':>8}   µs CPU per call, each round")
    for name, values in figures.items():
        rounds = " ".join(f"{v:.0f}" for v in values)
        print(f"{name:24} {statistics.median(values):8.0f}   {rounds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
