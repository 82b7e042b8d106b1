"""The cross-check of the worker's record against the server's truth (pure), and its parsing."""

from __future__ import annotations

import re
from typing import Any

import pytest

from paysim.faults.worker_report import MalformedReport, Truth, cross_check, parse_worker_report

NOW = 1_000.0
GRACE = 60.0


def worker(*entries: tuple[str, str, str], dropped_before: float = 0.0) -> Any:
    """A worker answer: (reservation, decision, payment id) per action."""
    by: dict[str, list[dict[str, Any]]] = {}
    for rid, decision, pid in entries:
        by.setdefault(rid, []).append(
            {"decision": decision, "payment_id": pid, "status": "PAYMENT_STATUS_X", "at": 900.0}
        )
    reservations = [{"reservation_id": r, "actions": a} for r, a in by.items()]
    return parse_worker_report(
        {
            "reservations": reservations,
            "evicted": int(dropped_before > 0),
            "dropped_before": dropped_before,
        }
    )


def check(facts: Any, truth: Truth) -> dict[str, Any]:
    return cross_check(facts, truth, now=NOW, grace_s=GRACE, sample=10)


def test_clean_when_every_completion_is_confirmed_and_every_confirmation_completed():
    facts = worker(("rsv-1", "CONFIRMED", "pay-1"), ("rsv-2", "CANCELLED", "pay-2"))
    found = check(facts, Truth({"pay-1": ("rsv-1", 100.0)}, {}))
    assert found["confirmed_not_completed"] == {"count": 0, "sample": []}
    assert found["confirmed_unknown"] == {"count": 0, "sample": []}
    assert found["completed_not_confirmed"] == {"count": 0, "within_grace": 0, "sample": []}


def test_a_reservation_confirmed_for_a_payment_that_did_not_complete():
    facts = worker(("rsv-1", "CONFIRMED", "pay-failed"), ("rsv-2", "CONFIRMED", "pay-gone"))
    statuses = {"pay-failed": "FAILED", "pay-gone": None}
    found = check(facts, Truth({}, statuses))
    assert found["confirmed_not_completed"] == {
        "count": 1,
        "sample": [
            {
                "reservation_id": "rsv-1",
                "payment_id": "pay-failed",
                "status": "FAILED",
                "confirmed_at": 900.0,
            }
        ],
    }
    assert found["confirmed_unknown"]["count"] == 1
    assert found["confirmed_unknown"]["sample"][0]["payment_id"] == "pay-gone"


def test_a_refunded_payment_did_complete():
    facts = worker(("rsv-1", "CONFIRMED", "pay-1"))
    assert check(facts, Truth({}, {"pay-1": "REFUNDED"}))["confirmed_not_completed"]["count"] == 0


def test_a_completion_older_than_the_grace_never_confirmed_is_missing():
    completed = {
        "pay-old": ("rsv-old", NOW - GRACE - 1),
        "pay-young": ("rsv-young", NOW - GRACE + 1),
        "pay-ok": ("rsv-ok", NOW - 500),
    }
    facts = worker(("rsv-ok", "CONFIRMED", "pay-ok"), ("rsv-old", "CANCELLED", "pay-old"))
    found = check(facts, Truth(completed, {}))["completed_not_confirmed"]
    assert found == {
        "count": 1,
        "within_grace": 1,
        "sample": [
            {"payment_id": "pay-old", "reservation_id": "rsv-old", "completed_at": NOW - GRACE - 1}
        ],
    }


def test_completions_the_worker_may_have_forgotten_are_not_counted():
    facts = worker(("rsv-x", "CONFIRMED", "pay-x"), dropped_before=NOW - 100)
    completed = {"pay-1": ("rsv-1", NOW - 200), "pay-2": ("rsv-2", NOW - 90)}
    found = check(facts, Truth(completed, {"pay-x": "COMPLETED"}))["completed_not_confirmed"]
    assert [s["payment_id"] for s in found["sample"]] == ["pay-2"]


def test_samples_are_bounded_and_counts_are_not():
    completed = {f"pay-{n}": (f"rsv-{n}", 0.0) for n in range(50)}
    found = cross_check(worker(), Truth(completed, {}), now=NOW, grace_s=GRACE, sample=3)
    assert found["completed_not_confirmed"]["count"] == 50
    assert len(found["completed_not_confirmed"]["sample"]) == 3


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ([], "no list of reservations"),
        ({"reservations": "x"}, "no list of reservations"),
        ({"reservations": [1]}, "reservations[0] has no list of actions"),
        ({"reservations": [{"actions": []}]}, "reservations[0].reservation_id"),
        (
            {"reservations": [{"reservation_id": "r", "actions": [{"decision": "MAYBE"}]}]},
            "reservations[0].actions[0].decision",
        ),
        (
            {
                "reservations": [
                    {
                        "reservation_id": "r",
                        "actions": [{"decision": "CONFIRMED", "payment_id": "p", "status": "s"}],
                    }
                ]
            },
            "reservations[0].actions[0].at",
        ),
        ({"reservations": [{"reservation_id": "r" * 300, "actions": []}]}, "reservation_id"),
        ({"reservations": [], "evicted": -1}, "evicted"),
    ],
)
def test_a_malformed_worker_answer_is_refused_saying_where(body, where):
    with pytest.raises(MalformedReport, match=re.escape(where)):
        parse_worker_report(body)
