"""``paysim chaos``: its fault injection, its invariants, its outputs, and small real runs.

* The receiver's faults, the switchable ``Gate``, the outage proxy and the
  PutEvents sink run on real loopback sockets (real time, fractions of a
  second: they are about sockets, not timing).
* Each invariant is fed synthetic records, first ones that keep the promise,
  then, one by one, records that break it: every check is shown able to fail.
* Two end-to-end runs of the real command in a subprocess: a small one with
  every fault on that must pass (moto's server as EventBridge and SQS), and
  one that must fail (exit 1) because its statistical bound is impossible.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import itertools
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from paysim.adapters.aws import make_client
from paysim.chaos import invariants as inv
from paysim.chaos.command import repeat_command
from paysim.chaos.driver import Intent, Timing, plan
from paysim.chaos.events import EventLog, EventSeen, OutageProxy, PutEventsSink
from paysim.chaos.gate import Gate
from paysim.chaos.html_report import render
from paysim.chaos.options import (
    NO_FAULTS,
    Options,
    OptionsError,
    Windows,
    add_arguments,
    from_args,
    parse_mix,
)
from paysim.chaos.receiver import FaultPlan, Receipt, WebhookReceiver, unit
from paysim.chaos.report import FaultRow, Result, Window, print_table, to_json
from paysim.chaos.run import place_windows
from paysim.chaos.scenarios import (
    CANCELLED,
    COMPLETED,
    EXPIRED,
    FAILED,
    PENDING,
    PROCESSING,
    REFUNDED,
)
from paysim.config import AwsSettings
from paysim.delivery.signing import build_headers

ROOT = Path(__file__).resolve().parents[2]
SECRET = "chaos-test-secret"

# -- the receiver and its faults ------------------------------------------------------


def webhook(status: str = COMPLETED, *, attempt: int = 1, secret: str = SECRET) -> bytes:
    """A whole signed HTTP/1.1 webhook request, as paysim sends it."""
    body = json.dumps(
        {
            "payment_id": "pay_1",
            "reservation_id": "rsv_1",
            "status": status,
            "amount": 100000,
            "currency": "KRW",
            "timestamp": int(time.time()),
            "event_type": "payment.status_updated",
        },
        separators=(",", ":"),
    ).encode()
    headers = build_headers(
        secrets=(secret,),
        style="legacy",
        webhook_id="evt_1",
        timestamp=int(time.time()),
        attempt=attempt,
        body=body,
    )
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (
        f"POST /webhooks HTTP/1.1\r\nHost: test\r\n{head}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def exchange(port: int, request: bytes, timeout_s: float = 5.0) -> bytes | str:
    """Send ``request``; the raw answer, or ``"reset"`` / ``"closed"`` (no answer)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(timeout_s):
            try:
                while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return data or "closed"
                    data += chunk
            except trio.BrokenResourceError as exc:
                cause = exc.__cause__
                if isinstance(cause, OSError) and cause.errno == errno.ECONNRESET:
                    return "reset"
                raise
        return data


def status_of(answer: bytes | str) -> int | str:
    return answer if isinstance(answer, str) else int(answer.split(b" ")[1])


async def start_receiver(nursery: trio.Nursery, plan: FaultPlan, **kw: Any) -> WebhookReceiver:
    receiver = WebhookReceiver((SECRET,), plan, slow_s=kw.pop("slow_s", 0.2), **kw)
    await nursery.start(receiver.serve, "127.0.0.1")
    return receiver


async def test_receiver_acknowledges_and_records_a_valid_delivery(nursery):
    receiver = await start_receiver(nursery, FaultPlan())
    answer = await exchange(receiver.gate.port, webhook(attempt=3))
    assert status_of(answer) == 200
    (r,) = receiver.receipts
    assert (r.payment_id, r.reservation_id, r.status, r.refunded) == (
        "pay_1",
        "rsv_1",
        COMPLETED,
        0,
    )
    assert (r.webhook_id, r.attempt, r.signature_ok, r.answer) == ("evt_1", 3, True, "ok")
    assert receiver.delivered() == 1


@pytest.mark.parametrize(
    ("plan", "answer", "seen"),
    [
        (FaultPlan(p_5xx=1.0), "5xx", {500, 502, 503}),
        (FaultPlan(p_reset=1.0), "reset", {"reset"}),
        (FaultPlan(p_timeout=1.0), "timeout", {"closed"}),
    ],
    ids=["5xx", "reset", "timeout"],
)
async def test_receiver_faults(nursery, plan, answer, seen):
    receiver = await start_receiver(nursery, plan, slow_s=0.3)
    started = trio.current_time()
    got = status_of(await exchange(receiver.gate.port, webhook()))
    assert got in seen
    if answer == "timeout":  # nothing until the slow answer's time is up
        assert trio.current_time() - started >= 0.3
    assert [r.answer for r in receiver.receipts] == [answer]
    assert receiver.delivered() == 0


async def test_a_bad_signature_is_rejected_and_recorded(nursery):
    receiver = await start_receiver(nursery, FaultPlan())
    answer = await exchange(receiver.gate.port, webhook(secret="someone-else"))
    assert status_of(answer) == 400
    (r,) = receiver.receipts
    assert (r.signature_ok, r.answer) == (False, "rejected")


def test_fault_plan_is_a_pure_function_with_the_asked_proportions():
    plan = FaultPlan(p_5xx=0.1, p_timeout=0.05, p_reset=0.05, seed=7)
    picks = [plan.decide(f"rsv_{i}", COMPLETED, 0, 1) for i in range(20_000)]
    assert picks == [plan.decide(f"rsv_{i}", COMPLETED, 0, 1) for i in range(20_000)]
    share = {k: picks.count(k) / len(picks) for k in ("5xx", "timeout", "reset", "ok")}
    assert share["5xx"] == pytest.approx(0.1, abs=0.01)
    assert share["timeout"] == pytest.approx(0.05, abs=0.01)
    assert share["reset"] == pytest.approx(0.05, abs=0.01)
    # Another attempt of the same change is a new draw; another seed, other faults.
    assert picks != [plan.decide(f"rsv_{i}", COMPLETED, 0, 2) for i in range(20_000)]
    other = dataclasses.replace(plan, seed=8)
    assert picks != [other.decide(f"rsv_{i}", COMPLETED, 0, 1) for i in range(20_000)]
    assert 0.0 <= unit("a", 1) < 1.0


# -- the gate, the outage proxy, the PutEvents sink --------------------------------------


async def echo(stream: trio.SocketStream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)


async def roundtrip(port: int, data: bytes = b"ping") -> bytes:
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(data)
            return bytes(await stream.receive_some(65536))


async def was_reset(stream: trio.SocketStream) -> bool:
    """Whether the peer reset (or closed) ``stream``: writing and reading fail or end."""
    try:
        with trio.fail_after(5):
            await stream.send_all(b"y")
            return not await stream.receive_some(10)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return True
    finally:
        await stream.aclose()


async def test_gate_down_refuses_and_resets_then_comes_back_on_the_same_port(nursery):
    gate = Gate(echo)
    port = await nursery.start(gate.serve, "127.0.0.1")
    held = await trio.open_tcp_stream("127.0.0.1", port)
    await held.send_all(b"x")
    assert await held.receive_some(10) == b"x"

    gate.down()
    assert not gate.is_up
    with pytest.raises(OSError, match="failed"):
        await roundtrip(port)  # refused: nothing listens
    assert await was_reset(held)

    gate.up()
    with trio.fail_after(5):
        while True:
            try:
                assert await roundtrip(port) == b"ping"
                break
            except OSError:
                await trio.sleep(0.01)


async def test_outage_proxy_relays_round_robin_and_can_be_cut(nursery):
    def tagged(tag: bytes) -> Callable[[trio.SocketStream], Any]:
        async def handler(stream: trio.SocketStream) -> None:
            await stream.receive_some(65536)
            await stream.send_all(tag)

        return handler

    upstreams = []
    for tag in (b"a", b"b"):
        serve = functools.partial(trio.serve_tcp, tagged(tag), 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        upstreams.append(listeners[0].socket.getsockname()[1])
    proxy = OutageProxy("127.0.0.1", upstreams)
    port = await nursery.start(proxy.serve, "127.0.0.1")
    assert [await roundtrip(port) for _ in range(4)] == [b"a", b"b", b"a", b"b"]
    async with trio.open_nursery() as n:
        n.start_soon(proxy.gate.outage, 0.3)
        await trio.sleep(0.05)
        with pytest.raises(OSError, match="failed"):
            await roundtrip(port)
    assert await roundtrip(port) in (b"a", b"b")


async def test_put_events_sink_records_entries_and_checks_the_contract(nursery, monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",  # the sink ignores them; botocore wants some
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    log = EventLog(source="src", bus="bus")
    port = await nursery.start(PutEventsSink(log).serve, "127.0.0.1")
    client = make_client("events", AwsSettings(region="us-east-1"), f"http://127.0.0.1:{port}")

    def entry(source: str, status: str) -> Any:
        detail = {"payment_id": "pay_1", "reservation_id": "rsv_1", "status": status}
        return {
            "Source": source,
            "DetailType": "Payment Status Updated",
            "Detail": json.dumps(detail),
            "EventBusName": "bus",
        }

    answer = await trio.to_thread.run_sync(
        lambda: client.put_events(Entries=[entry("src", COMPLETED), entry("other", FAILED)])
    )
    assert answer["FailedEntryCount"] == 0
    assert [(e.status, e.contract_ok) for e in log.events] == [(COMPLETED, True), (FAILED, False)]


# -- the invariants ----------------------------------------------------------------------


def intent(i: int, scenario: str, **changes: Any) -> Intent:
    base = Intent(i, scenario, f"rsv_{i}", "user_1", payment_id=f"pay_{i}")
    return dataclasses.replace(base, **changes)


_clock = iter(range(1, 1_000_000))


def receipt(pid: str, status: str, *, refunded: int = 0, answer: str = "ok", **kw: Any) -> Receipt:
    fields: dict[str, Any] = {
        "t": float(next(_clock)),
        "payment_id": pid,
        "reservation_id": pid.replace("pay", "rsv"),
        "status": status,
        "refunded": refunded,
        "webhook_id": f"evt_{pid}_{status}_{refunded}",
        "attempt": 1,
        "digest": f"body_{pid}_{status}_{refunded}",
        "signature_ok": True,
        "answer": answer,
    }
    fields.update(kw)
    return Receipt(**fields)


def event(pid: str, status: str, *, refunded: int = 0, ok: bool = True) -> EventSeen:
    n = next(_clock)
    return EventSeen(float(n), pid, pid.replace("pay", "rsv"), status, refunded, f"m{n}", ok)


def healthy() -> inv.Evidence:
    """A run that kept every promise: five journeys, one of each kind of ending."""
    intents = [
        intent(1, "approve"),
        intent(2, "fail"),
        intent(3, "cancel", cancelled=True),
        intent(4, "refund"),
        intent(5, "cancel_processing", cancelled=True),
    ]
    receipts = [
        receipt("pay_1", COMPLETED, answer="5xx"),  # a failed attempt, then the retry
        receipt("pay_1", COMPLETED),
        receipt("pay_2", FAILED),
        receipt("pay_3", CANCELLED),
        # Out of order, duplicated: REFUNDED overtook the partial refund and COMPLETED.
        receipt("pay_4", COMPLETED),
        receipt("pay_4", REFUNDED, refunded=100_000),
        receipt("pay_4", COMPLETED, refunded=40_000),
        receipt("pay_4", COMPLETED, refunded=40_000),
        receipt("pay_5", PROCESSING),
        receipt("pay_5", CANCELLED),
    ]
    events = [
        event("pay_1", COMPLETED),
        event("pay_2", FAILED),
        event("pay_3", CANCELLED),
        event("pay_4", COMPLETED),
        event("pay_4", COMPLETED, refunded=40_000),
        event("pay_4", REFUNDED, refunded=100_000),
        event("pay_5", PROCESSING),
        event("pay_5", CANCELLED),
    ]
    snapshot = {"pay_1": COMPLETED, "pay_2": FAILED, "pay_3": CANCELLED, "pay_4": REFUNDED}
    snapshot["pay_5"] = CANCELLED
    return inv.Evidence(
        intents, receipts, events, snapshot, random_approve_rate=0.7, shutdown=inv.Shutdown(0)
    )


def results(e: inv.Evidence) -> dict[str, inv.Check]:
    return {c.key: c for c in inv.check_all(e)}


def test_a_run_that_kept_its_promises_passes_every_check():
    checks = results(healthy())
    assert {k: c.status for k, c in checks.items()} == {
        "terminal": "pass",
        "status": "pass",
        "webhooks": "pass",
        "events": "pass",
        "random": "skip",  # no RANDOM payments here
        "timers": "pass",
        "outcomes": "pass",
        "sigterm": "pass",
    }
    assert checks["webhooks"].checked == 8  # 1 + 1 + 1 + 3 + 2 changes
    assert checks["timers"].checked == 2
    vs = inv.views(healthy())
    assert vs["pay_4"].stale == 1  # the partial refund arrived after REFUNDED: ignored


def test_the_consumer_fold_ignores_stale_and_illegal_changes():
    assert inv.fold([COMPLETED, REFUNDED, COMPLETED]) == (REFUNDED, 1)
    assert inv.fold([CANCELLED, PROCESSING]) == (CANCELLED, 1)
    assert inv.fold([PROCESSING, PROCESSING, EXPIRED]) == (EXPIRED, 0)
    assert inv.fold([]) == (PENDING, 0)


def broken(change: Callable[[inv.Evidence], object]) -> dict[str, inv.Check]:
    e = healthy()
    change(e)
    return results(e)


def test_terminal_fails_for_a_payment_that_never_settled():
    def pending(e: inv.Evidence) -> None:
        e.snapshot["pay_1"] = PENDING
        e.receipts = [r for r in e.receipts if r.payment_id != "pay_1"]
        e.events = [ev for ev in e.events or [] if ev.payment_id != "pay_1"]

    checks = broken(pending)
    assert checks["terminal"].status == "fail"
    assert "pay_1" in checks["terminal"].examples[0]


def test_status_fails_when_get_payment_status_and_webhooks_disagree():
    def disagree(e: inv.Evidence) -> None:
        e.snapshot["pay_2"] = COMPLETED

    checks = broken(disagree)
    assert checks["status"].status == "fail"
    assert checks["status"].violations == 1

    lost = broken(lambda e: e.snapshot.update(pay_1="NOT_FOUND"))
    assert lost["status"].status == "fail"


def test_status_leaves_payments_unsettled_at_the_snapshot_to_webhooks_and_events():
    late = broken(lambda e: e.snapshot.pop("pay_1"))
    assert late["status"].status == "pass"
    assert "1 not settled" in late["status"].detail
    assert late["terminal"].status == "pass"  # settled by its webhook


@pytest.mark.parametrize(
    "breakage",
    ["never_acknowledged", "bad_signature", "two_bodies_one_id", "two_ids_one_change"],
)
def test_webhooks_fail_for_each_broken_promise(breakage):
    def breaking(e: inv.Evidence) -> None:
        if breakage == "never_acknowledged":
            e.receipts = [r for r in e.receipts if r.payment_id != "pay_2"]
            e.receipts.append(receipt("pay_2", FAILED, answer="timeout"))
        elif breakage == "bad_signature":
            e.receipts.append(receipt("pay_1", COMPLETED, signature_ok=False, answer="rejected"))
        elif breakage == "two_bodies_one_id":
            e.receipts.append(receipt("pay_1", COMPLETED, digest="another body"))
        else:
            e.receipts.append(receipt("pay_1", COMPLETED, webhook_id="evt_other"))

    checks = broken(breaking)
    assert checks["webhooks"].status == "fail", breakage
    assert checks["webhooks"].violations == 1


def test_events_fail_for_a_missing_or_foreign_event_and_skip_when_not_read():
    def missing(e: inv.Evidence) -> None:
        e.events = [ev for ev in e.events or [] if ev.refunded != 40_000]

    checks = broken(missing)
    assert checks["events"].status == "fail"
    assert "40000" in checks["events"].examples[0]
    foreign = broken(lambda e: (e.events or []).append(event("pay_1", COMPLETED, ok=False)))
    assert foreign["events"].status == "fail"

    def unread(e: inv.Evidence) -> None:
        e.events = None

    assert broken(unread)["events"].status == "skip"


def random_run(approved: int, n: int) -> inv.Evidence:
    e = healthy()
    for i in range(n):
        pid = f"pay_r{i}"
        status = COMPLETED if i < approved else FAILED
        e.intents.append(dataclasses.replace(intent(100 + i, "random"), payment_id=pid))
        e.snapshot[pid] = status
        e.receipts.append(receipt(pid, status))
        assert e.events is not None
        e.events.append(event(pid, status))
    return e


def test_random_ratio_within_the_bound_passes_and_outside_fails():
    # n = 400, p = 0.7: sigma = 0.0229, 4.5 sigma = 0.103.
    assert results(random_run(280, 400))["random"].status == "pass"
    assert results(random_run(320, 400))["random"].status == "pass"  # 0.80: 4.4 sigma
    far = results(random_run(330, 400))["random"]  # 0.825: 5.5 sigma
    assert far.status == "fail"
    assert "sigma off" in far.examples[0]
    assert results(random_run(10, 20))["random"].status == "skip"  # too few to judge


def test_timers_fail_when_anything_follows_a_cancel():
    leaked = broken(lambda e: e.receipts.append(receipt("pay_3", COMPLETED)))
    assert leaked["timers"].status == "fail"
    expired = broken(lambda e: (e.events or []).append(event("pay_5", EXPIRED)))
    assert expired["timers"].status == "fail"


def test_outcomes_fail_for_the_wrong_ending_but_accept_a_lost_race():
    def wrong(e: inv.Evidence) -> None:
        e.snapshot["pay_1"] = FAILED
        e.receipts = [r for r in e.receipts if r.payment_id != "pay_1"]
        e.receipts.append(receipt("pay_1", FAILED))

    assert broken(wrong)["outcomes"].status == "fail"

    def race(e: inv.Evidence) -> None:
        e.intents[2] = dataclasses.replace(e.intents[2], cancelled=False, race_lost=True)
        e.snapshot["pay_3"] = COMPLETED
        e.receipts = [r for r in e.receipts if r.payment_id != "pay_3"]
        e.receipts.append(receipt("pay_3", COMPLETED))
        e.events = [ev for ev in e.events or [] if ev.payment_id != "pay_3"]
        e.events.append(event("pay_3", COMPLETED))

    checks = broken(race)
    assert checks["outcomes"].status == "pass"
    assert checks["timers"].checked == 1  # only pay_5's timer was cancelled


@pytest.mark.parametrize(
    "shutdown",
    [
        inv.Shutdown(143),
        inv.Shutdown(None),
        inv.Shutdown(0, unresolved=("pay_9",)),
        inv.Shutdown(0, undelivered_webhooks=("pay_9",)),
        inv.Shutdown(0, undelivered_events=("pay_9",)),
        inv.Shutdown(0, grace_ran_out=True),
        inv.Shutdown(0, traceback=True),
    ],
)
def test_sigterm_fails_for_anything_left_behind(shutdown):
    def sigterm(e: inv.Evidence) -> None:
        e.shutdown = shutdown

    assert broken(sigterm)["sigterm"].status == "fail"


def test_sigterm_is_skipped_without_one():
    def none(e: inv.Evidence) -> None:
        e.shutdown = None

    assert broken(none)["sigterm"].status == "skip"
    assert inv.passed(inv.check_all(healthy()))


# -- options, planning, windows, reports ---------------------------------------------------


def parse(*argv: str) -> Options:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(argv))


def test_options_default_to_every_fault_and_no_faults_turns_them_off():
    assert all(parse("--seed", "1").faults.enabled().values())
    assert parse("--no-faults").faults == NO_FAULTS
    some = parse("--no-faults", "--webhook-5xx", "0.2", "--events-outage", "2:0.5")
    assert (some.faults.webhook_5xx, some.faults.events_outage) == (0.2, Windows(2, 0.5))
    assert parse("--rate", "50", "--duration", "3").count == 150


@pytest.mark.parametrize(
    "argv",
    [
        ["--mix", "approve=1,bogus=2"],
        ["--mix", "approve=0"],
        ["--webhook-5xx", "0.6", "--webhook-reset", "0.5"],
        ["--receiver-down", "two"],
        ["--count", "5", "--duration", "1"],
        ["--target", "127.0.0.1:8030", "--duplicate-rate", "0.1"],  # the server's own knob
        ["--target", "127.0.0.1:8030", "--no-faults", "--sigterm"],
        ["--target", "nowhere"],
    ],
)
def test_bad_options_are_refused(argv):
    with pytest.raises(OptionsError):
        parse(*argv)


def test_the_target_mode_keeps_the_receivers_faults_only():
    o = parse("--target", "127.0.0.1:8030")
    assert o.faults.webhook_5xx == Options().faults.webhook_5xx
    assert o.faults.receiver_down.enabled
    assert (o.faults.duplicate_rate, o.faults.reorder_rate) == (0.0, 0.0)
    assert not o.faults.events_outage.enabled
    assert not o.faults.sigterm
    assert o.secret == "payment-sim-dev-secret"


def test_the_plan_is_the_seeds():
    o = Options(count=500, mix=parse_mix("approve=1,refund=1"), seed=5)
    first, again = plan(o), plan(o)
    assert [(i.scenario, i.reservation_id) for i in first] == [
        (i.scenario, i.reservation_id) for i in again
    ]
    assert {i.scenario for i in first} == {"approve", "refund"}
    assert first[7].reservation_id == "rsv_chaos_5_7"
    other = plan(dataclasses.replace(o, seed=6))
    assert [i.scenario for i in other] != [i.scenario for i in first]


def test_timing_follows_the_servers_delays():
    t = Timing.of_server(
        default_delay_ms=2000, delay_scenario_ms=10_000, intent_ttl_ms=600_000, scale=0.01
    )
    assert t.settle_s["approve"] == pytest.approx(0.12)
    assert t.settle_s["delay"] == pytest.approx(0.2)
    assert t.settle_s["timeout"] == pytest.approx(6.1)
    assert t.settle_s["refund"] == pytest.approx(0.1)  # settled by its own calls


def test_windows_are_seeded_apart_and_inside_the_load():
    w = Windows(3, 2.0)
    starts = place_windows(w, 100.0, random.Random(1))
    assert starts == place_windows(w, 100.0, random.Random(1))
    assert all(s >= 10.0 and s + 2.0 <= 90.0 for s in starts)
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(starts))
    assert place_windows(Windows(), 100.0, random.Random(1)) == []


def test_repeat_command_carries_the_seed():
    o = Options(seed=77)
    assert repeat_command(o, ["--count", "5", "--seed", "3"]) == (
        "paysim chaos --count 5 --seed=77"
    )
    assert repeat_command(o, ["--seed=3"]) == "paysim chaos --seed=77"


def sample_result(checks: list[inv.Check]) -> Result:
    return Result(
        title="paysim chaos: test <run>",
        seed=1,
        command="paysim chaos --seed=1",
        settings={"count": 5},
        wall_s=1.5,
        phases={"load": 1.0},
        counts={"intents accepted": 5},
        faults=[FaultRow("webhook 5xx", "p=0.05", True, 3, "answers 500")],
        windows=[Window("receiver down", 0.2, 0.5)],
        checks=checks,
        timeline=[
            {"t": 0.0, "created": 0, "webhooks_ok": 0, "webhooks_faulted": 0, "events": 0},
            {"t": 1.0, "created": 5, "webhooks_ok": 4, "webhooks_faulted": 1, "events": 5},
        ],
        sigterm_at_s=1.2,
        load_end_s=1.0,
    )


def test_reports_show_each_check_and_the_verdict(tmp_path):
    checks = inv.check_all(healthy())
    checks[0].violate("pay_x: made up")
    result = sample_result(checks)
    assert not result.passed
    out = tmp_path / "table.txt"
    with out.open("w") as f:
        print_table(result, f)
    text = out.read_text()
    assert "FAIL (1 invariants violated)" in text
    assert "e.g. pay_x: made up" in text
    assert "SKIP" in text
    doc = json.loads(to_json(result))
    assert doc["passed"] is False
    assert doc["checks"][0]["violations"] == 1


def test_the_html_report_is_self_contained_and_escaped():
    page = render(sample_result(inv.check_all(healthy())))
    assert page.startswith("<!doctype html>")
    assert "<svg" in page
    assert "<polyline" in page
    assert "test &lt;run&gt;" in page  # escaped
    for external in ("<script", "src=", "href=", "@import", "url("):
        assert external not in page


def test_the_html_report_renders_nested_values_as_tables_not_reprs():
    result = dataclasses.replace(
        sample_result(inv.check_all(healthy())),
        counts={"webhooks by status": {"200": 1200, "503": 7}, "journeys": ["approve", "fail"]},
        settings={"mix": {"approve": 5, "refund": 2}, "seed": None},
    )
    page = render(result)
    for repr_text in ("{'", "': ", "['", "None"):
        assert repr_text not in page
    assert "<td>200</td><td>1,200</td>" in page
    assert "<td>approve</td><td>5</td>" in page
    assert "approve, fail" in page


# -- the real command, end to end -----------------------------------------------------------


def chaos(*argv: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paysim", "chaos", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_a_small_run_with_every_fault_passes(tmp_path):
    """300 payments, every fault on (rates raised so that each fires in a small run)."""
    report = tmp_path / "chaos.json"
    html = tmp_path / "chaos.html"
    done = chaos(
        "--count=300",
        "--rate=100",
        "--seed=20",
        # Two moto servers, the default: with one, moto itself (PutEvents -> rule ->
        # SQS in one Python process) could not catch up after the events outage on a
        # slow machine, and the SIGTERM phase took 5.7-8.3 s of the 8 s grace (failing
        # about one run in four in the full suite); with two it takes 3.4-4.3 s.
        "--moto-shards=2",
        "--duplicate-rate=0.1",
        "--reorder-rate=0.3",
        "--receiver-down=1:0.5",
        "--events-outage=1:1",
        "--progress=0",
        f"--json={report}",
        f"--html={html}",
        timeout_s=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(report.read_text())
    assert doc["passed"] is True
    assert {c["key"]: c["status"] for c in doc["checks"]} == {
        "terminal": "pass",
        "status": "pass",
        "webhooks": "pass",
        "events": "pass",
        "random": "pass",
        "timers": "pass",
        "outcomes": "pass",
        "sigterm": "pass",
    }
    assert not doc["warnings"], doc["warnings"]  # every fault really happened
    assert all(f["exercised"] > 0 for f in doc["faults"])
    assert doc["counts"]["intents accepted"] == 300
    assert "<svg" in html.read_text()
    assert "result: PASS" in done.stdout


def test_a_violated_invariant_makes_the_command_fail():
    """A bound this sample cannot meet: RANDOM's ratio must equal 0.7 to within 1e-6 sigma.

    The seed is fixed: with a random one, exactly 70 approvals of 100 (about
    one run in eleven) would meet the bound and the run would pass.
    """
    done = chaos(
        "--seed=7",
        "--count=100",
        "--rate=200",
        "--mix=random=1",
        "--sigma=0.000001",
        "--no-faults",
        "--events=sink",
        "--progress=0",
        timeout_s=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "RANDOM's approve ratio" in done.stdout
    assert "FAIL" in done.stdout


def test_bad_options_exit_2():
    done = chaos("--mix=nothing=1", timeout_s=30)
    assert done.returncode == 2
    assert "--mix" in done.stderr
