"""The worker's record of what it did per reservation: bounded, oldest dropped and counted."""

from __future__ import annotations

import pytest

from paysim.faults.worker_report import parse_worker_report
from paysim.worker.record import Action, ReservationRecord


def confirmed(pid: str, at: float) -> Action:
    return Action("CONFIRMED", pid, "PAYMENT_STATUS_COMPLETED", at)


def test_the_record_keeps_each_reservations_actions_in_order():
    record = ReservationRecord()
    record.add("rsv-1", confirmed("pay-1", 10.0))
    record.add("rsv-1", Action("CANCELLED", "pay-2", "PAYMENT_STATUS_FAILED", 11.0))
    assert [a.decision for a in record.actions("rsv-1")] == ["CONFIRMED", "CANCELLED"]
    report = record.report(reservation_api=True)
    assert report["reservations"] == [
        {
            "reservation_id": "rsv-1",
            "actions": [
                {
                    "decision": "CONFIRMED",
                    "payment_id": "pay-1",
                    "status": "PAYMENT_STATUS_COMPLETED",
                    "at": 10.0,
                },
                {
                    "decision": "CANCELLED",
                    "payment_id": "pay-2",
                    "status": "PAYMENT_STATUS_FAILED",
                    "at": 11.0,
                },
            ],
        }
    ]
    assert (report["recorded"], report["evicted"], report["reservation_api"]) == (2, 0, True)


def test_the_least_recently_acted_on_reservation_is_dropped_and_counted():
    record = ReservationRecord(max_entries=2, per_reservation=2)
    record.add("rsv-1", confirmed("pay-1", 1.0))
    record.add("rsv-2", confirmed("pay-2", 2.0))
    record.add("rsv-1", confirmed("pay-1b", 3.0))  # rsv-1 is now the most recent
    record.add("rsv-3", confirmed("pay-3", 4.0))  # drops rsv-2
    assert len(record) == 2
    assert record.actions("rsv-2") == []
    assert (record.evicted, record.dropped_before, record.recorded) == (1, 2.0, 4)
    record.add("rsv-3", confirmed("pay-3b", 5.0))
    record.add("rsv-3", confirmed("pay-3c", 6.0))  # at most two actions per reservation
    assert [a.payment_id for a in record.actions("rsv-3")] == ["pay-3b", "pay-3c"]


def test_the_report_is_what_the_api_parses():
    record = ReservationRecord()
    record.add("rsv-1", confirmed("pay-1", 10.0))
    facts = parse_worker_report(record.report(reservation_api=False))
    assert facts.confirmed_payment_ids() == ["pay-1"]
    assert (facts.reservations, facts.reservation_api, facts.evicted) == (1, False, 0)


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        ReservationRecord(max_entries=0)
