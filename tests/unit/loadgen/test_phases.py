"""``paysim bench --timeline``: phases on the run's clock, per-phase summaries, the HTML bands,
and the options that check a timeline before anything starts."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from paysim import cli
from paysim.loadgen import bottleneck, html_report, options, report
from paysim.loadgen.phases import BASE, PhaseClock, bands, summaries
from paysim.loadgen.results import Stats, merge_all

DOWN_UP = [("down", 1.0), ("up", 1.0)]


# --- the clock -------------------------------------------------------------------


def test_each_offset_falls_in_the_phase_in_force_then_the_base_plan() -> None:
    clock = PhaseClock.of(DOWN_UP, start_s=-0.1, repeat=False)
    assert clock.names == ("down", "up", BASE)
    at = {t: clock.name_at(t) for t in (0.0, 0.89, 0.9, 1.89, 1.9, 5.0)}
    assert at == {0.0: "down", 0.89: "down", 0.9: "up", 1.89: "up", 1.9: BASE, 5.0: BASE}
    index, into = clock.position(0.5)
    assert (index, round(into, 9)) == (0, 0.6)
    index, into = clock.position(2.4)  # half a second since it ended
    assert (index, round(into, 9)) == (2, 0.5)
    assert clock.end_s == pytest.approx(1.9)


def test_a_timeline_starting_after_t0_leaves_the_base_plan_before_it() -> None:
    clock = PhaseClock.of(DOWN_UP, start_s=0.5, repeat=False)
    assert clock.index_at(0.2) == clock.base
    assert clock.spans(3.0) == [(2, 0.0, 0.5), (0, 0.5, 1.5), (1, 1.5, 2.5), (2, 2.5, 3.0)]


def test_a_repeating_timeline_cycles_and_its_exposure_adds_up() -> None:
    clock = PhaseClock.of([("a", 1.0), ("b", 2.0)], start_s=-0.1, repeat=True)
    assert [clock.name_at(t) for t in (0.5, 1.0, 2.95, 4.5, 5.95)] == ["a", "b", "a", "b", "a"]
    assert clock.end_s == math.inf
    assert clock.exposure(7.0) == pytest.approx([2.9, 4.1, 0.0])
    # A long run is counted by whole cycles: the same answer as stretch by stretch.
    assert clock._exposure_by_cycles(7.0) == pytest.approx(clock.exposure(7.0))
    assert sum(clock.exposure(100_000.0)) == pytest.approx(100_000.0)
    assert clock.exposure(100_000.0)[0] == pytest.approx(100_000.0 / 3, abs=1.0)


# --- per-phase aggregation ---------------------------------------------------------


def down_up_stats() -> Stats:
    """20 calls sent in "down" (UNAVAILABLE, 10 ms) and 30 in "up" (OK, 1..30 ms), in
    two workers' records."""
    parts = [Stats(), Stats()]
    for i in range(20):
        parts[i % 2].record(0.5, 0.010, 0.010, "UNAVAILABLE", phase=0)
    for i in range(1, 31):
        parts[i % 2].record(1.5, i / 1000, i / 1000, "OK", phase=1)
    parts[0].record(1.5, 0.002, 0.002, "DEADLINE_EXCEEDED", phase=1)
    for part in parts:
        part.wall_s = 2.0
    return merge_all(parts)


def test_calls_are_summed_per_phase_with_their_codes_rate_and_percentiles() -> None:
    clock = PhaseClock.of(DOWN_UP, start_s=0.0, repeat=False)
    stats = down_up_stats()
    down, up = summaries(clock, stats.phases, stats.wall_s)  # no call under the base plan
    assert (down["name"], down["calls"], down["ok"], down["errors"]) == ("down", 20, 0, 20)
    assert down["errors_by_code"] == {"UNAVAILABLE": 20}
    assert down["rps"] == 20.0
    assert down["latency_ms"]["p50"] == pytest.approx(10.0)
    assert (up["calls"], up["ok"], up["errors"]) == (31, 30, 1)
    assert up["errors_by_code"] == {"DEADLINE_EXCEEDED": 1}
    assert up["latency_ms"]["p99"] == pytest.approx(30.0, rel=0.005)
    assert up["latency_ms"]["p50"] == pytest.approx(15.0, rel=0.01)
    # Every call is in exactly one phase.
    assert down["calls"] + up["calls"] == stats.count


def test_calls_under_the_base_plan_get_their_own_row() -> None:
    clock = PhaseClock.of([("down", 1.0)], start_s=0.0, repeat=False)
    stats = Stats()
    stats.record(0.5, 0.01, 0.01, "UNAVAILABLE", phase=0)
    stats.record(1.5, 0.01, 0.01, "OK", phase=clock.base)
    stats.wall_s = 2.0
    rows = summaries(clock, stats.phases, stats.wall_s)
    assert [(r["name"], r["calls"], r["seconds"]) for r in rows] == [
        ("down", 1, 1.0),
        (BASE, 1, 1.0),
    ]


def doc_with(names: list[str], clock_start: float = -0.1) -> dict[str, Any]:
    clock = PhaseClock.of([(n, 1.0) for n in names], start_s=clock_start, repeat=False)
    stats = down_up_stats()
    o = options.parse(["-n", "51"])
    faults = {
        "timeline": "t<1>",
        "seed": 7,
        "repeat": False,
        "start_s": clock.start_s,
        "phases": [{"name": n, "duration_s": 1.0} for n in names],
        "checks": [],
    }
    info = report.RunInfo("127.0.0.1:1", 1, "thread", 1, None, faults=faults, clock=clock)
    a = bottleneck.assess(bottleneck.Inputs(2.0, [0.5], (1,)))
    return report.build(o, info, stats, a)


def test_the_reports_give_each_phase_and_each_second_its_phase() -> None:
    doc = json.loads(report.to_json(doc_with(["down", "up"])))
    assert [(r["t"], r["phase"]) for r in doc["timeline"]] == [(0, "down"), (1, "up")]
    by_phase = {r["name"]: r for r in doc["faults"]["by_phase"]}
    assert by_phase["down"]["errors_by_code"] == {"UNAVAILABLE": 20}
    assert doc["faults"]["seed"] == 7
    text = report.text(doc)
    assert "Fault timeline 't<1>', seed 7" in text
    assert re.search(r"  down +0\.90 s +20 calls +22\.2/s .*errors: UNAVAILABLE 20", text)
    assert re.search(r"  up +1\.00 s +31 calls +31\.0/s .*errors: DEADLINE_EXCEEDED 1", text)


def test_a_run_without_a_timeline_has_no_fault_section() -> None:
    o = options.parse(["-n", "1"])
    info = report.RunInfo("127.0.0.1:1", 1, "thread", 1, None)
    stats = Stats()
    stats.record(0.1, 0.01, 0.01, "OK")
    stats.wall_s = 1.0
    doc = report.build(o, info, stats, bottleneck.assess(bottleneck.Inputs(1.0, [0.1], None)))
    assert doc["faults"] is None
    assert "phase" not in doc["timeline"][0]
    assert "Fault timeline" not in report.text(doc)
    assert "class='phase'" not in html_report.render(doc)


# --- the HTML bands --------------------------------------------------------------------


SVG = "{http://www.w3.org/2000/svg}"


def child(element: ET.Element, path: str) -> ET.Element:
    found = element.find(SVG + path)
    assert found is not None, path
    return found


def series(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, re.S)[1:]  # after the histogram


def test_each_time_series_shows_one_labelled_band_per_phase_behind_its_lines() -> None:
    page = html_report.render(doc_with(["down", "up"]))
    charts = series(page)
    assert len(charts) == 2
    for svg in charts:
        groups = [g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "phase"]
        labels = [child(g, "text").text for g in groups]
        titles = [child(g, "rect/" + SVG + "title").text for g in groups]
        widths = [float(child(g, "rect").get("width", "0")) for g in groups]
        assert labels == ["down", "up"]
        assert titles[0] == "phase down: 0.00 s to 0.90 s"
        assert widths[1] > widths[0] > 0  # up lasted 1 s, down 0.9 s of the run
        assert svg.index("class='phase'") < svg.index("<polyline")  # behind the lines
    assert "<h2>Fault timeline t&lt;1&gt;</h2>" in page


def test_phase_names_are_escaped_and_shortened_to_fit() -> None:
    hostile = "<script>alert('x')</script> & \"more\""
    page = html_report.render(doc_with([hostile, "up"]))
    assert "<script" not in page.lower()
    for svg in series(page):
        ET.fromstring(svg)  # still well-formed
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;more&quot;" in svg
    assert html_report._label("a-very-long-phase-name", 40.0) == "a-ve…"
    assert html_report._label("ok", 40.0) == "ok"
    assert html_report._label("anything", 5.0) == ""


def test_bands_cover_the_run_in_order() -> None:
    clock = PhaseClock.of(DOWN_UP, start_s=-0.25, repeat=False)
    got = [(b["name"], b["from_s"], b["to_s"]) for b in bands(clock, 2.0)]
    assert got == [("down", 0.0, 0.75), ("up", 0.75, 1.75), (BASE, 1.75, 2.0)]


# --- options ---------------------------------------------------------------------------

TIMELINE = """
name = "down-up"
[[phases]]
name = "down"
duration_s = 1.5
[phases.rpcs."*"]
error_rate = 1.0
[[phases]]
name = "up"
duration_s = 1
"""


def test_a_timeline_without_n_or_z_sets_the_duration_to_its_length(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(TIMELINE)
    o = options.parse(["--timeline", str(path), "--seed", "4"])
    assert (o.duration_s, o.total, o.until_timeline_ends) == (2.5, None, True)
    assert o.fault_seed == 4  # --seed, unless --fault-seed is given
    assert o.http_target == "127.0.0.1:8031"
    given = options.parse(["h:9", "--timeline", "regional_blip", "-n", "10",
                           "--fault-seed", "1", "--http-target", "h:10"])  # fmt: skip
    assert (given.total, given.until_timeline_ends, given.fault_seed) == (10, False, 1)
    assert given.http_target == "h:10"


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("name = 1", [], "--timeline: timeline.phases: 1 to 100 [[phases]] tables"),
        ("[[phases]]\nname = 'x'\n", [], "timeline.phases[0].duration_s: a positive number"),
        ("not toml [", [], "--timeline: timeline: not valid TOML"),
        (TIMELINE, ["--http-target", "nope"], "--http-target: 'nope' is not host:port"),
    ],
)
def test_a_bad_timeline_is_one_clear_line(
    tmp_path: Path, content: str, extra: list[str], message: str
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(content)
    with pytest.raises(options.OptionsError) as info:
        options.parse(["--timeline", str(path), *extra])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_timeline_options_need_a_timeline_and_a_missing_file_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(options.OptionsError, match="--fault-seed goes with --timeline"):
        options.parse(["--fault-seed", "3"])
    assert cli.main(["bench", "--timeline", "/no/such/timeline.toml"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "paysim bench: --timeline: timeline '/no/such/timeline.toml': No such file or directory\n"
    )
