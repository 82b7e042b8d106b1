"""The HTML report: one self-contained page (inline CSS and SVG; no scripts, no fetches).

It renders the same document as the text report (``report.build``): the
summary, the latency percentiles, a latency histogram (40 equal bins from
the fastest to the slowest call), a per-second time series of throughput
(OK and errors) and of the average latency, the status codes, the errors,
and the CPU and bottleneck lines. Every text from the run is escaped.

With a fault timeline (``--timeline``) the time series show its phases as
shaded, named bands behind the lines (one per stretch of a phase; the base
plan is left unshaded), and a table gives each phase's summary. The series'
x axis is time: second ``t`` is drawn at ``t + 0.5``, so bands and points
share one scale.
"""

from __future__ import annotations

import html
from typing import Any

from paysim.loadgen.report import format_duration

_W, _H, _PAD, _TOP = 720, 230, 44, 26  # size, left/bottom margin, top margin (titles)
MIN_SPAN_S = 0.5
BAND_COLORS = ("#f4d03f", "#85c1e9", "#f1948a", "#82e0aa", "#d7bde2", "#f8c471")
CHAR_PX = 6.2  # about one character of the 11px labels
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 780px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 2px 12px 2px 0; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.warn { color: #a40; font-weight: bold; }
svg { background: #fafafa; border: 1px solid #ddd; }
svg text { font: 11px sans-serif; fill: #444; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td class='n'>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _axes(x_label: str, y_label: str, y_max: float) -> list[str]:
    bottom, right = _H - _PAD, _W - 10
    parts = [
        f"<line x1='{_PAD}' y1='{bottom}' x2='{right}' y2='{bottom}' stroke='#888'/>",
        f"<line x1='{_PAD}' y1='{_TOP}' x2='{_PAD}' y2='{bottom}' stroke='#888'/>",
        f"<text x='{(_PAD + right) // 2}' y='{_H - 8}' text-anchor='middle'>{_e(x_label)}</text>",
        f"<text x='{_PAD}' y='14'>{_e(y_label)}</text>",
        f"<text x='{_PAD - 4}' y='{_TOP + 4}' text-anchor='end'>{y_max:,.4g}</text>",
        f"<text x='{_PAD - 4}' y='{bottom}' text-anchor='end'>0</text>",
    ]
    return parts


def histogram_svg(doc: dict[str, Any]) -> str:
    """Bars of the fine histogram; x is latency (ms), y the number of calls."""
    bins = doc["histogram_fine"]
    if not bins:
        return "<p>No calls.</p>"
    top = max(b["count"] for b in bins) or 1
    inner_w, inner_h = _W - _PAD - 10, _H - _PAD - _TOP
    bar_w = inner_w / len(bins)
    parts = _axes("latency (ms)", "calls", top)
    for i, b in enumerate(bins):
        h = inner_h * b["count"] / top
        x = _PAD + i * bar_w
        parts.append(
            f"<rect x='{x:.1f}' y='{_H - _PAD - h:.1f}' width='{max(bar_w - 1, 1):.1f}' "
            f"height='{h:.1f}' fill='#4a7ebb'><title>&lt;= {b['mark_ms']:.3f} ms: "
            f"{b['count']} calls</title></rect>"
        )
    fastest, slowest = doc["summary"]["fastest_ms"], doc["summary"]["slowest_ms"]
    parts.append(f"<text x='{_PAD}' y='{_H - _PAD + 14}'>{fastest:.2f}</text>")
    parts.append(f"<text x='{_W - 10}' y='{_H - _PAD + 14}' text-anchor='end'>{slowest:.2f}</text>")
    return _svg(parts, "latency histogram")


def _x(t: float, seconds: int) -> float:
    """Where time ``t`` (s from the start) falls on a series of ``seconds`` seconds."""
    inner_w = _W - _PAD - 10
    return _PAD + inner_w * min(max(t, 0.0), seconds) / max(seconds, 1)


def _polyline(values: list[float], top: float, color: str) -> str:
    inner_h = _H - _PAD - _TOP
    points = " ".join(
        f"{_x(i + 0.5, len(values)):.1f},{_H - _PAD - inner_h * v / top:.1f}"
        for i, v in enumerate(values)
    )
    return f"<polyline points='{points}' fill='none' stroke='{color}' stroke-width='1.5'/>"


def _label(name: str, width_px: float) -> str:
    """``name`` shortened with an ellipsis to fit ``width_px`` (empty if nothing fits)."""
    fits = int((width_px - 4) / CHAR_PX)
    if fits >= len(name):
        return name
    return name[: fits - 1] + "…" if fits >= 2 else ""


def bands_svg(doc: dict[str, Any], seconds: int) -> list[str]:
    """The fault phases as shaded, labelled rectangles (drawn first: behind the lines)."""
    faults = doc.get("faults")
    if not faults:
        return []
    base = len(faults["phases"])
    parts = []
    for band in faults["bands"]:
        if band["index"] == base:
            continue
        x0, x1 = _x(band["from_s"], seconds), _x(band["to_s"], seconds)
        if x1 - x0 < 0.5:
            continue
        name = band["name"]
        color = BAND_COLORS[band["index"] % len(BAND_COLORS)]
        span = f"{band['from_s']:.2f} s to {band['to_s']:.2f} s"
        parts.append(
            f"<g class='phase'><rect x='{x0:.1f}' y='{_TOP}' width='{x1 - x0:.1f}' "
            f"height='{_H - _PAD - _TOP}' fill='{color}' fill-opacity='0.35'>"
            f"<title>phase {_e(name)}: {span}</title></rect>"
            f"<text x='{x0 + 2:.1f}' y='{_TOP + 11}'>{_e(_label(name, x1 - x0))}</text></g>"
        )
    return parts


def series_svg(doc: dict[str, Any], key: str) -> str:
    """A per-second series: ``"throughput"`` (OK and errors per second) or ``"latency"``."""
    # A last second shorter than half a second would show a rate from a handful of calls.
    rows = [r for r in doc["timeline"] if r["span_s"] >= MIN_SPAN_S]
    if not rows:
        return "<p>The run was too short for a time series.</p>"
    bands = bands_svg(doc, len(rows))
    if key == "throughput":
        ok = [r["ok"] / r["span_s"] for r in rows]
        errors = [r["errors"] / r["span_s"] for r in rows]
        top = max(max(ok), max(errors), 1.0)
        parts = bands + _axes("time (s)", "calls/s", top)
        parts += [_polyline(ok, top, "#2a8a3a"), _polyline(errors, top, "#c0392b")]
        parts.append(f"<text x='{_W - 10}' y='14' text-anchor='end'>green: OK, red: errors</text>")
    else:
        avg = [float(r["avg_ms"] or 0.0) for r in rows]
        top = max(max(avg), 1e-3)
        parts = bands + _axes("time (s)", "average latency (ms)", top)
        parts.append(_polyline(avg, top, "#4a7ebb"))
    parts.append(f"<text x='{_W - 10}' y='{_H - _PAD + 14}' text-anchor='end'>{len(rows)}</text>")
    return _svg(parts, f"{key} per second")


def _svg(parts: list[str], label: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H}' "
        f"viewBox='0 0 {_W} {_H}' role='img' aria-label='{_e(label)}'>" + "".join(parts) + "</svg>"
    )


def _summary_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    s = doc["summary"]
    rows = [
        ("Call", doc["call"]),
        ("Target", doc["target"]),
        ("Mode", f"{doc['mode']} loop"),
        ("Count", str(s["count"])),
        ("Total", format_duration(s["total_ms"])),
        ("Slowest", format_duration(s["slowest_ms"])),
        ("Fastest", format_duration(s["fastest_ms"])),
        ("Average", format_duration(s["average_ms"])),
        ("Requests/sec", f"{s['rps']:.2f}"),
        ("Errors", str(s["errors"])),
    ]
    ol = doc["open_loop"]
    if ol is not None:
        rows.append(("Rate asked", f"{ol['rate']:g}/s"))
        if ol["offered_rps"] is not None:
            rows.append(("Rate offered", f"{ol['offered_rps']:.1f}/s"))
        rows.append(("Send lateness p99", format_duration(ol["lateness_ms"]["p99"])))
    return rows


def _phase_table(doc: dict[str, Any]) -> str:
    head = "".join(
        f"<th>{h}</th>" for h in ("phase", "seconds", "calls", "calls/s", "p50", "p99", "errors")
    )
    rows = []
    for r in doc["faults"]["by_phase"]:
        errors = ", ".join(f"{code} {n}" for code, n in r["errors_by_code"].items()) or "none"
        cells = [
            f"{r['seconds']:.2f}",
            str(r["calls"]),
            "-" if r["rps"] is None else f"{r['rps']:.1f}",
            format_duration(r["latency_ms"]["p50"]),
            format_duration(r["latency_ms"]["p99"]),
        ]
        numbers = "".join(f"<td class='n'>{_e(c)}</td>" for c in cells)
        rows.append(f"<tr><th>{_e(r['name'])}</th>{numbers}<td>{_e(errors)}</td></tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render(doc: dict[str, Any]) -> str:
    """The whole page."""
    latency = [(k, format_duration(v)) for k, v in doc["latency_ms"].items()]
    codes = [(k, str(v)) for k, v in doc["status_codes"].items()]
    errors = [(k, str(v)) for k, v in doc["errors"].items()]
    cpu = ", ".join(f"{x:.0%}" for x in doc["generator"]["worker_cpu"])
    server_cpu = doc["server"]["cpu"]
    warnings = "".join(f"<p class='warn'>{_e(w)}</p>" for w in doc["warnings"])
    body = [
        f"<h1>paysim bench: {_e(doc['call'])}</h1>",
        f"<p>{_e(doc['tool'])}, {_e(doc['date'])}</p>",
        "<h2>Summary</h2>",
        _table(_summary_rows(doc)),
        "<h2>Latency distribution</h2>",
        _table(latency),
        "<h2>Latency histogram</h2>",
        histogram_svg(doc),
        "<h2>Throughput and errors per second</h2>",
        series_svg(doc, "throughput"),
        "<h2>Average latency per second</h2>",
        series_svg(doc, "latency"),
        "<h2>Status code distribution</h2>",
        _table(codes),
    ]
    if errors:
        body += ["<h2>Error distribution</h2>", _table(errors)]
    if doc.get("faults"):
        body += [f"<h2>Fault timeline {_e(doc['faults']['timeline'])}</h2>", _phase_table(doc)]
    body += [
        "<h2>Who was the bottleneck</h2>",
        f"<p>Generator CPU per worker: {_e(cpu)}"
        + ("" if server_cpu is None else f"; server CPU: {server_cpu:.0%}")
        + "</p>",
        f"<p>{_e(doc['bottleneck']['sentence'])}</p>",
        warnings,
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>paysim bench: {_e(doc['call'])}</title><style>{_STYLE}</style></head>"
        "<body>" + "\n".join(body) + "</body></html>\n"
    )
