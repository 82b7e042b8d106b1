"""``paysim bench`` (paysim/loadgen): templating, options, histogram math, reports, and
small end-to-end runs against a real paysim app on a loopback port.

The end-to-end runs call ``loadgen.main.run`` in a worker thread (``trio.to_thread``)
while the app serves in the test's nursery; with one worker the generator runs in
a thread too, so nothing is spawned except in the one multi-process test. No
assertion depends on timing: counts, status codes and report contents only.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
import re
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import trio
from google.protobuf import json_format

from paysim import cli
from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim.loadgen import bottleneck, calls, client, html_report, main, options, report, template
from paysim.loadgen.results import Histogram, Stats, merge_all, percentile_label
from tests.grpc_helpers import AppHandle

# --- templating ---------------------------------------------------------------


def render(text: str, **ctx: Any) -> Any:
    t = template.RequestTemplate(text, pb.CreatePaymentIntentRequest)
    return pb.CreatePaymentIntentRequest.FromString(t.body(template.Context(**ctx)))


def test_request_number_worker_and_ghz_spellings() -> None:
    m = render('{"reservation_id": "r{{n}}-{{ .WorkerID }}", "user_id": "u{{.RequestNumber}}"}',
               n=41, worker=3)  # fmt: skip
    assert (m.reservation_id, m.user_id) == ("r41-3", "u41")


def test_unquoted_placeholder_is_a_json_number() -> None:
    m = render('{"amount": {"amount": {{n}}, "currency": "KRW"}}', n=12345)
    assert m.amount.amount == 12345


def test_random_placeholders_are_in_range_and_seeded() -> None:
    text = '{"reservation_id": "{{rand_int 5 7}}", "user_id": "{{rand_string 12}}", '
    text += '"idempotency_key": "{{uuid}}", "webhook_url": "{{choice a b}}"}'
    first = [render(text, rng=random.Random(9), n=i) for i in range(3)]
    again = [render(text, rng=random.Random(9), n=i) for i in range(3)]
    assert first == again
    for m in first:
        assert 5 <= int(m.reservation_id) <= 7
        assert re.fullmatch(r"[A-Za-z0-9]{12}", m.user_id)
        assert uuid.UUID(m.idempotency_key).version == 4
        assert m.webhook_url in ("a", "b")


def test_cycle_timestamp_and_intent_id() -> None:
    text = '{"reservation_id": "{{cycle x y z}}", "user_id": "{{intent_id}}", '
    text += '"idempotency_key": "{{timestamp}}-{{timestamp_ms}}"}'
    got = [render(text, n=n, intents=["p0", "p1"]) for n in range(4)]
    assert [m.reservation_id for m in got] == ["x", "y", "z", "x"]
    assert [m.user_id for m in got] == ["p0", "p1", "p0", "p1"]
    seconds, millis = got[0].idempotency_key.split("-")
    assert int(millis) // 1000 in (int(seconds), int(seconds) + 1)


def test_static_template_is_serialized_once() -> None:
    t = template.RequestTemplate(calls.default_data("ListPayments"), pb.ListPaymentsRequest)
    assert t.static
    assert t.body(template.Context(n=1)) is t.body(template.Context(n=2))


def test_every_default_body_fits_its_call() -> None:
    for name in calls.NAMES:
        t = template.RequestTemplate(calls.default_data(name), calls.request_type(name))
        assert t.body(template.Context(intents=["pay_1"]))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"user_id": "{{nope}}"}', "unknown placeholder 'nope'"),
        ('{"user_id": "{{rand_int 1}}"}', "rand_int takes two integers"),
        ('{"user_id": "{{rand_int 9 1}}"}', "A <= B"),
        ('{"user_id": "{{n 3}}"}', "takes no arguments"),
        ('{"user_id": "{{}}"}', "empty placeholder"),
        ('{"user_id": {{uuid}}}', "not valid JSON after templating"),
        ('{"no_such_field": 1}', "no field named"),
        ("[1, 2]", "must be a JSON object"),
        # the field and the type it takes, not "'int' object is not iterable"
        ('{"amount": 5}', "amount: expected an object (common.v1.Money), got a number"),
        ('{"amount": {"amount": "x"}}', "amount.amount: expected a number, got a string"),
        ('{"user_id": ["u"]}', "user_id: expected a string, got a list"),
        ('{"scenario": true}', "scenario: expected a payment.v1.PaymentScenario name"),
        ('{"metadata": {"tags": [1]}}', "metadata.tags: expected an object (a map), got a list"),
    ],
)
def test_template_errors_are_one_line(text: str, message: str) -> None:
    with pytest.raises(template.TemplateError) as info:
        render(text, n=0)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# --- options ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1m30s", 90.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert options.parse_duration(text, "x") == seconds


def test_defaults_are_ghz_like() -> None:
    o = options.parse([])
    assert (o.target, o.call, o.concurrency, o.connections, o.total) == (
        "127.0.0.1:8030", "CreatePaymentIntent", 50, 1, 200,
    )  # fmt: skip
    assert not o.open_loop
    assert options.parse(["--call", "payment.v1.PaymentService.ListPayments"]).call == (
        "ListPayments"
    )
    assert options.parse(["--warmup", "5s"]).warmup_s == 5.0
    assert options.parse(["--warmup", "300"]).warmup_requests == 300


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--call", "Refund"], "unknown method 'Refund'"),
        (["-n", "10", "-z", "5s"], "not both"),
        (["-c", "2", "--connections", "3"], "must not exceed --concurrency"),
        (["--connections", "2", "--procs", "3"], "--procs must not exceed --connections"),
        (["-z", "soon"], "not a duration"),
        (["-r", "0"], "--rps: must be positive"),
        (["-d", '{"amount": "x"}'], "--data: amount: expected an object (common.v1.Money)"),
        (["--call", "GetPaymentStatus"], "needs payment intents made first"),
        (["--spawn", "127.0.0.1:1"], "a target or --spawn"),
        (["--client-cores", "9999"], "core 9999 is not available"),
        (["-m", '{"k": 1}'], "values must be strings"),
        (["nohost"], "is not host:port"),
    ],
)
def test_bad_options_are_one_clear_line(argv: list[str], message: str) -> None:
    with pytest.raises(options.OptionsError) as info:
        options.parse(argv)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "-d", '{"reservation_id": {{n}}}']) == 2
    err = capsys.readouterr().err
    assert err.startswith("paysim bench: --data: reservation_id: expected a string, got a number")
    assert err.count("\n") == 1


def test_the_load_is_split_evenly() -> None:
    o = options.parse(["-c", "10", "--connections", "3", "-n", "100", "--procs", "3"])
    plans = main.split(o, "t:1", (), main.worker_count(o, (1, 2)), (1, 2))
    assert [p.concurrency for p in plans] == [4, 3, 3]
    assert [p.connections for p in plans] == [1, 1, 1]
    assert [p.total for p in plans] == [34, 33, 33]
    assert [p.cores for p in plans] == [(1,), (2,), (1,)]
    auto = options.parse(["--connections", "4", "-c", "64"])
    assert main.worker_count(auto, (1,)) == 1
    assert main.worker_count(auto, (1, 2, 3, 4, 5)) == 4


# --- histogram and percentiles -------------------------------------------------


def test_percentiles_within_half_a_percent_and_exact_extremes() -> None:
    h = Histogram()
    values = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1 s
    random.Random(1).shuffle(values)
    for v in values:
        h.record(v)
    for q in (0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99, 0.999):
        exact = math.ceil(q * 1000) / 1000  # nearest rank
        assert h.percentile(q) == pytest.approx(exact, rel=0.005)
    assert (h.min, h.max, h.count) == (0.001, 1.0, 1000)
    assert h.mean == pytest.approx(0.5005)
    assert h.percentile(1.0) == 1.0


def test_one_value_is_reported_exactly() -> None:
    h = Histogram()
    h.record(0.0123)
    assert h.percentile(0.5) == 0.0123
    assert Histogram().percentile(0.5) != Histogram().percentile(0.5)  # NaN when empty


def test_merging_equals_recording_everything_in_one() -> None:
    parts, whole = [Stats(), Stats()], Stats()
    for i in range(1, 500):
        code = "OK" if i % 5 else "UNAVAILABLE"
        for s in (parts[i % 2], whole):
            s.record(i / 100, i / 1000, i / 2000, code)
    merged = merge_all(parts)
    assert merged.latency.buckets == whole.latency.buckets
    assert merged.codes == whole.codes
    assert merged.count == 499
    assert merged.error_count == 99
    assert sum(s.ok + s.errors for s in merged.timeline.values()) == 499


def test_linear_bins_cover_every_call() -> None:
    h = Histogram()
    for v in (0.001, 0.002, 0.002, 0.010):
        h.record(v)
    bins = h.linear_bins(10)
    assert sum(n for _, n in bins) == 4
    assert bins[-1][0] == pytest.approx(0.010)
    assert bins[0][1] == 1
    assert bins[-1][1] == 1


def test_percentile_labels() -> None:
    assert [percentile_label(q) for q in (0.1, 0.5, 0.99, 0.999)] == [
        "p10", "p50", "p99", "p99.9",
    ]  # fmt: skip


# --- bottleneck --------------------------------------------------------------------


def test_a_saturated_generator_is_named_and_a_saturated_server_too() -> None:
    generator = bottleneck.assess(bottleneck.Inputs(10.0, [9.7], (1,), server_cpu_s=6.0))
    assert generator.verdict == "generator"
    assert "worker 0 used 97% of a core" in generator.sentence()
    server = bottleneck.assess(bottleneck.Inputs(10.0, [3.0], (1,), server_cpu_s=9.8))
    assert server.verdict == "server"
    assert bottleneck.assess(bottleneck.Inputs(10.0, [3.0], None, 5.0)).verdict == "neither"
    assert bottleneck.assess(bottleneck.Inputs(10.0, [3.0], None)).verdict == "unknown"


def test_an_open_loop_that_fell_behind_blames_the_generator() -> None:
    late = bottleneck.Inputs(
        10.0, [5.0], None, rps=1000, offered_rps=800, lateness_p99_s=0.05, foreign_share=0.5
    )
    a = bottleneck.assess(late)
    assert a.verdict == "generator"
    assert any("send lateness p99 50.0 ms" in r for r in a.generator_reasons)
    assert any("offered 800/s of the 1,000/s" in r for r in a.generator_reasons)
    assert "50% of a core" in a.warnings[0]


# --- reports --------------------------------------------------------------------


def sample_doc(rps: float | None = None) -> dict[str, Any]:
    stats = Stats()
    for i in range(1, 101):
        code = "OK" if i <= 90 else "INVALID_ARGUMENT"
        stats.record(i / 100, i / 1000, i / 1000, code)
        if code != "OK":
            stats.record_error("INVALID_ARGUMENT: invalid <amount>")
        stats.lateness.record(0.0002)
    stats.sent, stats.wall_s, stats.send_span_s = 100, 2.0, 1.98  # 100 calls at 50/s
    stats.cpu_by_worker = [0.5]
    argv = ["-n", "100"] + (["-r", str(rps)] if rps else [])
    o = options.parse(argv)
    info = report.RunInfo("127.0.0.1:1", 1, "thread", 1, (0,))
    a = bottleneck.assess(bottleneck.Inputs(2.0, [0.5], (1,), server_cpu_s=1.96))
    return report.build(o, info, stats, a)


def test_text_report_has_ghz_sections_and_numbers() -> None:
    out = report.text(sample_doc())
    for line in (
        "  Count:          100",
        "  Total:          2.00 s",
        "  Slowest:        100.00 ms",
        "  Fastest:        1.00 ms",
        "  Average:        50.50 ms",
        "  Requests/sec:   50.00",
        "  50 % in 50.",
        "  99.9 % in 100.00 ms",
        "  [OK]               90 responses",
        "  [INVALID_ARGUMENT] 10 responses",
        "  [10]   INVALID_ARGUMENT: invalid <amount>",
        "Bottleneck:       the server (it used 98% of its core(s))",
    ):
        assert line in out, line
    assert out.count("∎") > 0
    assert "Response time histogram:" in out


def test_json_report_round_trips_the_numbers() -> None:
    doc = json.loads(report.to_json(sample_doc(rps=50)))
    assert doc["summary"]["count"] == 100
    assert doc["summary"]["errors"] == 10
    assert doc["summary"]["rps"] == 50.0
    assert doc["latency_ms"]["p99"] == pytest.approx(99.0, rel=0.005)
    assert doc["status_codes"] == {"OK": 90, "INVALID_ARGUMENT": 10}
    assert doc["open_loop"]["lateness_ms"]["p99"] == pytest.approx(0.2, rel=0.005)
    assert doc["open_loop"]["offered_rps"] == pytest.approx(50.0)
    assert sum(b["count"] for b in doc["histogram"]) == 100
    assert [row["t"] for row in doc["timeline"]] == [0, 1]
    assert doc["bottleneck"]["verdict"] == "server"


def test_html_report_is_self_contained_and_escaped() -> None:
    page = html_report.render(sample_doc(rps=50))
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)\s*=", page)
    assert "invalid &lt;amount&gt;" in page
    assert "invalid <amount>" not in page
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 3
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    assert svgs[0].count("<rect") == 40
    assert "Requests/sec" in page
    assert "50.00" in page


# --- end to end against a real server ------------------------------------------------

CREATE_HALF_INVALID = (
    '{"reservation_id": "rsv_{{n}}", "user_id": "u", '
    '"amount": {"amount": {{cycle 100 0}}, "currency": "KRW"}}'
)


async def bench(app: AppHandle, *argv: str) -> tuple[int, str, str]:
    o = options.parse([f"127.0.0.1:{app.grpc_port}", "--no-progress", *argv])
    out, err = io.StringIO(), io.StringIO()
    status = await trio.to_thread.run_sync(lambda: main.run(o, out, err))
    return status, out.getvalue(), err.getvalue()


async def test_closed_loop_counts_ok_and_invalid_argument(app: AppHandle) -> None:
    status, out, err = await bench(app, "-n", "200", "-c", "8", "-d", CREATE_HALF_INVALID,
                                   "-O", "json", "--warmup", "10")  # fmt: skip
    assert status == 0, err
    doc = json.loads(out)
    assert doc["summary"]["count"] == 200
    assert doc["status_codes"] == {"OK": 100, "INVALID_ARGUMENT": 100}
    [(message, n)] = doc["errors"].items()
    assert n == 100
    assert message.startswith("INVALID_ARGUMENT: ")
    assert "amount" in message
    assert doc["mode"] == "closed"
    assert doc["generator"]["mode"] == "thread"


async def test_open_loop_sends_every_call_on_schedule(app: AppHandle) -> None:
    status, out, err = await bench(app, "-n", "200", "-r", "4000", "-c", "16",
                                   "--connections", "2")  # fmt: skip
    assert status == 0, err
    assert "  Count:          200" in out
    assert "[OK] 200 responses" in out
    assert "Open loop (constant rate 4000/s" in out


async def test_intents_feed_get_payment_status(app: AppHandle) -> None:
    status, out, err = await bench(app, "--call", "GetPaymentStatus", "--intents", "5",
                                   "-n", "50", "-c", "5", "-O", "json")  # fmt: skip
    assert status == 0, err
    assert json.loads(out)["status_codes"] == {"OK": 50}


async def test_two_worker_processes_merge_their_results(app: AppHandle, tmp_path: Any) -> None:
    html = tmp_path / "r.html"
    status, out, err = await bench(app, "-n", "200", "-c", "8", "--connections", "2",
                                   "--procs", "2", "-d", CREATE_HALF_INVALID,
                                   "-O", "json", "--html", str(html))  # fmt: skip
    assert status == 0, err
    doc = json.loads(out)
    assert doc["generator"]["mode"] == "processes"
    assert len(doc["generator"]["worker_cpu"]) == 2
    assert doc["status_codes"] == {"OK": 100, "INVALID_ARGUMENT": 100}
    assert "<svg" in html.read_text()


def test_an_unreachable_target_fails_at_once_with_exit_1() -> None:
    o = options.parse(["127.0.0.1:1", "--no-progress"])
    err = io.StringIO()
    assert main.run(o, io.StringIO(), err) == 1
    assert err.getvalue() == "paysim bench: cannot connect to 127.0.0.1:1: Connection refused\n"


def test_json_format_matches_protobuf_mapping() -> None:
    """The default body is what h2load's benchmark sends, in JSON form."""
    m = render(calls.default_data("CreatePaymentIntent"), n=7)
    assert json_format.MessageToDict(m)["amount"] == {"amount": "100000", "currency": "KRW"}


# --- the worker's generator, with a stand-in for the gRPC method ---------------------


def worker_plan(data: str, **fields: Any) -> client.Plan:
    base: dict[str, Any] = {
        "index": 0, "procs": 1, "target": "unused:1", "call": "CreatePaymentIntent",
        "data": data, "metadata": {}, "concurrency": 2, "connections": 1, "total": None,
        "duration_s": None, "rps": None, "warmup_requests": 0, "warmup_s": 0.0,
        "timeout_s": None, "seed": None,
    }  # fmt: skip
    return client.Plan(**{**base, **fields})


def run_generator(plan: client.Plan, count: int) -> tuple[Stats, list[Any]]:
    sent: list[Any] = []

    async def method(body: bytes, **_: Any) -> None:
        sent.append(pb.CreatePaymentIntentRequest.FromString(body))

    async def go() -> Stats:
        return await client.Generator(plan, [method]).run_phase(0.0, count, None)

    return asyncio.run(go()), sent


@pytest.mark.parametrize("rps", [None, 1e6])
def test_unbuildable_requests_count_as_client_errors(rps: float | None) -> None:
    data = '{"reservation_id": "r", "amount": {"amount": {{cycle 5 x}}, "currency": "KRW"}}'
    stats, sent = run_generator(worker_plan(data, rps=rps), 10)
    assert stats.codes == {"OK": 5, "CLIENT_ERROR": 5}
    assert len(sent) == 5
    [message] = stats.errors
    assert message.startswith("CLIENT_ERROR: not valid JSON after templating")


def test_request_numbers_interleave_across_workers() -> None:
    plan = worker_plan('{"reservation_id": "{{n}}"}', index=1, procs=3, rps=1e6)
    stats, sent = run_generator(plan, 4)
    assert [m.reservation_id for m in sent] == ["1", "4", "7", "10"]
    assert stats.lateness.count == 4


def test_open_loop_caps_calls_in_flight_and_queues_the_rest() -> None:
    running, peak = [0], [0]

    async def method(body: bytes, **_: Any) -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0)
        running[0] -= 1

    plan = worker_plan('{"reservation_id": "{{n}}"}', rps=1e6, concurrency=3)

    async def go() -> Stats:
        return await client.Generator(plan, [method]).run_phase(0.0, 50, None)

    stats = asyncio.run(go())
    assert stats.codes == {"OK": 50}
    assert peak[0] == 3
