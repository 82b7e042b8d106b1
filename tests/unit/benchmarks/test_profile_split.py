"""profile_split: py-spy raw stacks into the whole path's cost categories."""

from __future__ import annotations

from pathlib import Path

import pytest

from paysim.benchmarks.profile_split import OTHER, category, main, split

RAW = [
    "run (trio/_core/_run.py:2400);"
    "WebhookDispatcher._worker (paysim/delivery/webhook_dispatcher.py:90);"
    "_log (structlog/_native.py:20) 7\n",
    "run (trio/_core/_run.py:2400);Connection._reader (purerpc/connection.py:50);"
    "receive_data (h2/connection.py:1) 3\n",
    "_bootstrap (threading.py:1);_make_api_call (botocore/client.py:9) 2\n",
    "run (trio/_core/_run.py:2400);unrolled_run (trio/_core/_run.py:2800) 1\n",
    "\n",
    "a truncated line\n",
]


def test_the_first_matching_category_takes_a_stack() -> None:
    # A webhook's log line is the webhook's cost, not the rpc log line's.
    assert category(RAW[0]).startswith("webhook delivery")
    assert category(RAW[1]) == "gRPC read, h2 parse, call start"
    assert category(RAW[2]) == "botocore PutEvents (threads)"
    assert category(RAW[3]) == OTHER


def test_the_handlers_webhook_url_check_is_the_handlers_cost() -> None:
    stack = (
        "PaymentApi.CreatePaymentIntent (paysim/entrypoints/grpc/payment_api.py:158);"
        "check_webhook_url (paysim/domain/validation.py:106) 9"
    )
    assert category(stack) == "CreatePaymentIntent handler"
    sender = "WebhookSender.send (paysim/delivery/webhook_sender.py:99);encode (x.py:1) 1"
    assert category(sender).startswith("webhook delivery")


def test_split_counts_samples_and_skips_what_is_not_a_stack() -> None:
    counts = split(RAW)
    assert sum(counts.values()) == 13
    assert counts[OTHER] == 1


def test_main_prints_shares_times_the_cpu_per_payment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "p.raw"
    raw.write_text("".join(RAW))
    assert main([str(raw), "--us-per-payment", "1300"]) == 0
    out = capsys.readouterr().out
    assert "13 samples" in out
    assert "53.8 %      700 µs  webhook delivery" in out  # 7 of 13 x 1300
    empty = tmp_path / "empty.raw"
    empty.write_text("")
    assert main([str(empty), "--us-per-payment", "1"]) == 1
