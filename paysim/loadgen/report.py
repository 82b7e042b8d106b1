"""The report of a run: one JSON document, rendered as ghz-like text (or written as JSON).

``build`` gathers everything into a plain JSON document (times in ms); the
text report (``text``), ``--format json`` and the HTML report
(``html_report.py``) are all renderings of that one document, so they cannot
disagree. The text follows ghz's layout: Summary (Count, Total, Slowest,
Fastest, Average, Requests/sec), a response time histogram of ten equal
bins, the latency distribution (p10 .. p99.9), the status code distribution
and the error distribution; then what ghz does not have: the open-loop
schedule, who used how much CPU, and the bottleneck verdict. With
``--timeline``, ``faults`` gives each phase's calls, rate, errors by gRPC
code and p50/p99 (calls filed by the phase in force when they were sent),
the phases' stretches of the run (``bands``, for the charts) and the checks
against the server's own phase; each second of ``timeline`` names its phase.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass
from typing import Any

from paysim import __version__
from paysim.loadgen import calls, phases
from paysim.loadgen.bottleneck import Assessment
from paysim.loadgen.options import Options
from paysim.loadgen.results import PERCENTILES, Histogram, Stats, percentile_label

TEXT_BINS = 10
HTML_BINS = 40
BAR_WIDTH = 40
LABEL_WIDTH = 18


@dataclass(frozen=True)
class RunInfo:
    """What the orchestration knows besides the calls' record."""

    target: str
    procs: int
    worker_mode: str  # "thread" or "processes"
    connections: int
    server_cores: tuple[int, ...] | None  # None: not spawned
    server_cpu_s: float | None = None  # the spawned server's CPU over the measured phase
    faults: dict[str, Any] | None = None  # --timeline: what was played (fault_admin)
    clock: phases.PhaseClock | None = None  # --timeline: its phases on the run's clock


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) or math.isinf(seconds) else round(seconds * 1e3, 4)


def _percentiles(h: Histogram) -> dict[str, float | None]:
    return {percentile_label(q): _ms(h.percentile(q)) for q in PERCENTILES}


def _bins(h: Histogram, n: int) -> list[dict[str, Any]]:
    return [{"mark_ms": _ms(edge), "count": count} for edge, count in h.linear_bins(n)]


def _timeline(stats: Stats, clock: phases.PhaseClock | None) -> list[dict[str, Any]]:
    """One row per second of the phase: calls that ended in it; ``span_s`` is the
    second's length (shorter for the last, partial second); ``phase`` (with a
    timeline) the fault phase in force at the middle of that second."""
    rows = []
    for t in range(math.ceil(stats.wall_s) if stats.timeline else 0):
        s = stats.timeline.get(t)
        ended = (s.ok + s.errors) if s else 0
        span = min(1.0, stats.wall_s - t)
        row: dict[str, Any] = {
            "t": t,
            "span_s": round(span, 4),
            "ok": s.ok if s else 0,
            "errors": s.errors if s else 0,
            "avg_ms": _ms(s.latency_total / ended) if s and ended else None,
        }
        if clock is not None:
            row["phase"] = clock.name_at(t + span / 2)
        rows.append(row)
    return rows


def _faults(info: RunInfo, stats: Stats) -> dict[str, Any] | None:
    if info.faults is None or info.clock is None:
        return None
    return {
        **info.faults,
        "by_phase": phases.summaries(info.clock, stats.phases, stats.wall_s),
        "bands": phases.bands(info.clock, stats.wall_s),
    }


def _open_loop(options: Options, stats: Stats) -> dict[str, Any] | None:
    if options.rps is None:
        return None
    lateness = stats.lateness
    return {
        "rate": options.rps,
        "offered_rps": stats.offered_rps(options.rps),
        "lateness_ms": {
            "p50": _ms(lateness.percentile(0.5)),
            "p99": _ms(lateness.percentile(0.99)),
            "max": _ms(lateness.max) if lateness.count else None,
        },
        "service_ms": _percentiles(stats.service),
    }


def _per_call_us(cpu_s: float | None, count: int) -> float | None:
    """CPU microseconds per call: what one call costs a side, whatever the load."""
    return None if cpu_s is None or not count else round(cpu_s / count * 1e6, 1)


def build(options: Options, info: RunInfo, stats: Stats, assessment: Assessment) -> dict[str, Any]:
    """The whole report as a JSON-ready document."""
    h = stats.latency
    return {
        "tool": f"paysim bench {__version__}",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "call": calls.path(options.call).lstrip("/"),
        "target": info.target,
        "mode": "open" if options.open_loop else "closed",
        "options": options.describe(),
        "summary": {
            "count": stats.count,
            "total_ms": _ms(stats.wall_s),
            "slowest_ms": _ms(h.max) if h.count else None,
            "fastest_ms": _ms(h.min) if h.count else None,
            "average_ms": _ms(h.mean) if h.count else None,
            "rps": stats.count / stats.wall_s if stats.wall_s else 0.0,
            "ok": stats.codes.get("OK", 0),
            "errors": stats.error_count,
        },
        "latency_ms": _percentiles(h),
        "histogram": _bins(h, TEXT_BINS),
        "histogram_fine": _bins(h, HTML_BINS),
        "status_codes": dict(stats.codes.most_common()),
        "errors": dict(stats.errors.most_common()),
        "open_loop": _open_loop(options, stats),
        "generator": {
            "procs": info.procs,
            "mode": info.worker_mode,
            "connections": info.connections,
            "client_cores": list(options.client_cores) if options.client_cores else None,
            "worker_cpu": [round(x, 4) for x in assessment.worker_cpu],
            "cpu_per_call_us": _per_call_us(sum(stats.cpu_by_worker), stats.count),
        },
        "server": {
            "spawned": info.server_cores is not None,
            "cores": list(info.server_cores) if info.server_cores else None,
            "cpu": None if assessment.server_cpu is None else round(assessment.server_cpu, 4),
            "cpu_per_call_us": _per_call_us(info.server_cpu_s, stats.count),
        },
        "bottleneck": {
            "verdict": assessment.verdict,
            "sentence": assessment.sentence(),
            "generator_reasons": assessment.generator_reasons,
            "server_reasons": assessment.server_reasons,
        },
        "warnings": assessment.warnings,
        "foreign_cpu": assessment.foreign_cpu,
        "timeline": _timeline(stats, info.clock),
        "faults": _faults(info, stats),
    }


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def format_duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.2f} ms"


def _summary(doc: dict[str, Any]) -> list[str]:
    s, g, o = doc["summary"], doc["generator"], doc["options"]
    if doc["mode"] == "open":
        load = f"open loop at {o['rps']:g} calls/s, at most {o['concurrency']} in flight"
    else:
        load = f"closed loop, {o['concurrency']} calls in flight"
    load += f" over {g['connections']} connection(s), {g['procs']} worker(s) ({g['mode']})"
    target = doc["target"]
    if doc["server"]["spawned"]:
        target += f" (spawned, cores {','.join(map(str, doc['server']['cores']))})"
    return [
        "Summary:",
        f"  Call:\t{doc['call']}",
        f"  Target:\t{target}",
        f"  Load:\t{load}",
        f"  Count:\t{s['count']}",
        f"  Total:\t{format_duration(s['total_ms'])}",
        f"  Slowest:\t{format_duration(s['slowest_ms'])}",
        f"  Fastest:\t{format_duration(s['fastest_ms'])}",
        f"  Average:\t{format_duration(s['average_ms'])}",
        f"  Requests/sec:\t{s['rps']:.2f}",
    ]


def _histogram(doc: dict[str, Any]) -> list[str]:
    bins = doc["histogram"]
    if not bins:
        return []
    top = max(b["count"] for b in bins) or 1
    lines = ["Response time histogram:"]
    first = doc["summary"]["fastest_ms"]
    rows = [(first, 0), *((b["mark_ms"], b["count"]) for b in bins)]
    marks = [f"{mark:.3f}" for mark, _ in rows]
    mark_width = max(len(m) for m in marks)
    count_width = max(len(str(c)) for _, c in rows) + 2
    for mark, (_, count) in zip(marks, rows, strict=True):
        bar = "∎" * round(BAR_WIDTH * count / top)
        lines.append(f"  {mark:>{mark_width}} {'[' + str(count) + ']':<{count_width}} |{bar}")
    return lines


def _distribution(doc: dict[str, Any]) -> list[str]:
    lines = ["Latency distribution:"]
    for label, ms in doc["latency_ms"].items():
        lines.append(f"  {label[1:]} % in {format_duration(ms)}")
    return lines


def _codes_and_errors(doc: dict[str, Any]) -> list[str]:
    lines = ["Status code distribution:"]
    width = max((len(code) for code in doc["status_codes"]), default=2) + 2
    for code, n in doc["status_codes"].items():
        lines.append(f"  {'[' + code + ']':<{width}} {n} responses")
    if doc["errors"]:
        lines += ["", "Error distribution:"]
        for message, n in doc["errors"].items():
            lines.append(f"  [{n}]   {message}")
    return lines


def _open_loop_lines(doc: dict[str, Any]) -> list[str]:
    ol = doc["open_loop"]
    if ol is None:
        return []
    lat, svc = ol["lateness_ms"], ol["service_ms"]
    offered = "-" if ol["offered_rps"] is None else f"{ol['offered_rps']:.1f}/s"
    return [
        f"Open loop (constant rate {ol['rate']:g}/s; latency above counts from each call's "
        "intended send time):",
        f"  Offered:\t{offered}",
        f"  Send lateness:\tp50 {format_duration(lat['p50'])}, p99 {format_duration(lat['p99'])}, "
        f"max {format_duration(lat['max'])}",
        f"  Service time:\tp50 {format_duration(svc['p50'])}, p99 {format_duration(svc['p99'])}, "
        f"p99.9 {format_duration(svc['p99.9'])} (from the actual send)",
    ]


def _cpu_lines(doc: dict[str, Any]) -> list[str]:
    g, srv = doc["generator"], doc["server"]
    shares = ", ".join(f"{x:.0%}" for x in g["worker_cpu"])
    cores = f" on cores {','.join(map(str, g['client_cores']))}" if g["client_cores"] else ""
    per_call = g["cpu_per_call_us"]
    per_call_text = "" if per_call is None else f", {per_call:.0f} µs per call"
    lines = [f"Generator CPU:\t{shares} of a core per worker{cores}{per_call_text}"]
    if srv["spawned"] and srv["cpu"] is not None:
        per_call = srv["cpu_per_call_us"]
        per_call_text = "" if per_call is None else f", {per_call:.0f} µs per call"
        lines.append(f"Server CPU:\t{srv['cpu']:.0%} of its core(s){per_call_text}")
    lines.append(f"Bottleneck:\t{doc['bottleneck']['sentence']}")
    lines += [f"WARNING: {w}" for w in doc["warnings"]]
    return lines


def _fault_lines(doc: dict[str, Any]) -> list[str]:
    """Per phase: calls, calls/s, p50, p99 and the errors by gRPC code."""
    faults = doc.get("faults")
    if not faults:
        return []
    seed = "" if faults["seed"] is None else f", seed {faults['seed']}"
    lines = [
        f"Fault timeline {faults['timeline']!r}{seed} (calls by the phase in force when sent; "
        f"it started {-faults['start_s']:.3f} s before the load):"
    ]
    width = max(len(row["name"]) for row in faults["by_phase"]) + 2
    for row in faults["by_phase"]:
        lat = row["latency_ms"]
        rps = "-" if row["rps"] is None else f"{row['rps']:.1f}/s"
        errors = ", ".join(f"{code} {n}" for code, n in row["errors_by_code"].items()) or "none"
        lines.append(
            f"  {row['name']:<{width}}{row['seconds']:>7.2f} s {row['calls']:>8} calls "
            f"{rps:>10}  p50 {format_duration(lat['p50'])}, p99 {format_duration(lat['p99'])}; "
            f"errors: {errors}"
        )
    return lines


def _align(line: str) -> str:
    """``"  Label:\tvalue"`` -> the value in a column (ghz aligns with tabs)."""
    label, tab, value = line.partition("\t")
    return f"{label:<{LABEL_WIDTH}}{value}" if tab else line


def text(doc: dict[str, Any]) -> str:
    """ghz's text report, plus the open-loop, CPU and bottleneck lines."""
    sections = [
        _summary(doc),
        _histogram(doc),
        _distribution(doc),
        _codes_and_errors(doc),
        _open_loop_lines(doc),
        _fault_lines(doc),
        _cpu_lines(doc),
    ]
    blocks = ["\n".join(_align(line) for line in lines) for lines in sections if lines]
    return "\n\n".join(blocks) + "\n"
