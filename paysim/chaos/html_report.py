"""The HTML report: one self-contained file (inline CSS and SVG, no scripts, no external assets).

A timeline (per-second rates of creates, acknowledged webhooks, faulted
webhook attempts and events reaching the queue, with the fault windows shaded
and the SIGTERM marked), the faults table, the invariants table with
examples, and the run's settings. Every string from the run is escaped.
"""

from __future__ import annotations

import html
import itertools
from pathlib import Path

from paysim.chaos.report import Result

WIDTH, HEIGHT = 900, 280
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 28
SERIES = (
    ("created", "creates/s", "#4c78a8"),
    ("webhooks_ok", "webhooks acknowledged/s", "#54a24b"),
    ("webhooks_faulted", "webhook attempts faulted/s", "#e45756"),
    ("events", "events in the queue/s", "#b279a2"),
)
WINDOW_COLOURS = {"receiver down": "#f58518", "EventBridge outage": "#9d755d"}

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;width:100%}td,th{padding:4px 8px;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right}
.pass{color:#fff;background:#2e7d32}.fail{color:#fff;background:#c62828}.skip{background:#ccc}
.badge{padding:1px 8px;border-radius:3px;font-weight:600}.ex{color:#555;font-size:12px}
code{background:#f4f4f4;padding:1px 4px}
table.in{width:auto}table.in td{border:0;padding:0 8px 0 0}svg text{font:11px system-ui,sans-serif}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def cell(value: object) -> str:
    """A value as HTML: a mapping becomes a small table, a list a list of cells,
    anything else escaped text (never a Python repr of a container)."""
    if isinstance(value, dict):
        if not value:
            return "&mdash;"
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{cell(v)}</td></tr>" for k, v in value.items())
        return f'<table class="in">{rows}</table>'
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(cell(v) for v in value) if value else "&mdash;"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "&mdash;" if value is None else _e(value)


def _rates(result: Result, key: str) -> list[tuple[float, float]]:
    """Per-second rates of a cumulative counter in the timeline."""
    points = result.timeline
    out = []
    for a, b in itertools.pairwise(points):
        dt = b["t"] - a["t"]
        if dt > 0:
            out.append((b["t"], max(0.0, (b.get(key, 0.0) - a.get(key, 0.0)) / dt)))
    return out


def timeline_svg(result: Result) -> str:
    series = {key: _rates(result, key) for key, _, _ in SERIES}
    t_max = max((t for pts in series.values() for t, _ in pts), default=1.0)
    t_max = max(t_max, *(w.end_s for w in result.windows), 1.0)
    y_max = max((v for pts in series.values() for _, v in pts), default=1.0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + plot_w * t / t_max

    def y(v: float) -> float:
        return TOP + plot_h * (1.0 - v / y_max)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}">']
    for w in result.windows:
        colour = WINDOW_COLOURS.get(w.kind, "#999")
        width = max(1.0, x(w.end_s) - x(w.start_s))
        parts.append(
            f'<rect x="{x(w.start_s):.1f}" y="{TOP}" width="{width:.1f}" '
            f'height="{plot_h}" fill="{colour}" opacity="0.18"><title>{_e(w.kind)} '
            f"{w.start_s:.1f}-{w.end_s:.1f} s</title></rect>"
        )
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        v = y_max * frac
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#eee"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>'
        )
    for i in range(6):
        t = t_max * i / 5
        parts.append(f'<text x="{x(t):.1f}" y="{HEIGHT - 8}" text-anchor="middle">{t:.0f} s</text>')
    for key, label, colour in SERIES:
        pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in series[key])
        if pts:
            parts.append(
                f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.6">'
                f"<title>{_e(label)}</title></polyline>"
            )
    markers = ((result.load_end_s, "load ends", 0), (result.sigterm_at_s, "SIGTERM", 14))
    for at, label, drop in markers:
        if at is not None:
            # Labels near the right edge go to the left of their line.
            anchor, dx = ("end", -4) if x(at) > WIDTH - 120 else ("start", 4)
            parts.append(
                f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
                f'stroke="#333" stroke-dasharray="4 3"/><text x="{x(at) + dx:.1f}" '
                f'y="{TOP + 12 + drop}" text-anchor="{anchor}">{_e(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts) + _legend()


def _legend() -> str:
    items = [(label, colour, 1.0) for _, label, colour in SERIES]
    items += [(kind, colour, 0.35) for kind, colour in WINDOW_COLOURS.items()]
    return (
        '<p class="ex">'
        + " ".join(
            f'<span style="display:inline-block;width:10px;height:10px;background:{colour};'
            f'opacity:{opacity}"></span> {_e(label)} &nbsp;'
            for label, colour, opacity in items
        )
        + " dashed: end of load, SIGTERM</p>"
    )


def render(result: Result) -> str:
    status = "pass" if result.passed else "fail"
    rows = []
    for c in result.checks:
        examples = "".join(f'<div class="ex">e.g. {_e(x)}</div>' for x in c.examples)
        detail = f'<div class="ex">{_e(c.detail)}</div>' if c.detail else ""
        rows.append(
            f"<tr><td>{_e(c.title)}{detail}{examples}</td><td class=n>{c.checked:,}</td>"
            f'<td class=n>{c.violations:,}</td><td><span class="badge {c.status}">'
            f"{c.status.upper()}</span></td></tr>"
        )
    faults = "".join(
        f"<tr><td>{_e(f.name)}</td><td>{_e(f.setting)}</td>"
        f"<td class=n>{f.exercised:,}</td><td>{_e(f.evidence)}</td></tr>"
        for f in result.faults
    )
    settings = "".join(
        f"<tr><td>{_e(k)}</td><td>{cell(v)}</td></tr>" for k, v in result.settings.items()
    )
    counts = "".join(
        f"<tr><td>{_e(k)}</td><td>{cell(v)}</td></tr>" for k, v in result.counts.items()
    )
    phases = ", ".join(f"{_e(k)} {v:.1f} s" for k, v in result.phases.items())
    warnings = "".join(f"<li>{_e(w)}</li>" for w in result.warnings)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(result.title)}</title>
<style>{_CSS}</style></head><body>
<h1>{_e(result.title)} <span class="badge {status}">{status.upper()}</span></h1>
<p>Wall time {result.wall_s:.1f} s ({phases}). Repeat with <code>{_e(result.command)}</code>.</p>
{f"<ul>{warnings}</ul>" if warnings else ""}
<h2>Timeline</h2>{timeline_svg(result)}
<h2>Invariants</h2><table><tr><th>invariant</th><th>checked</th><th>violations</th>
<th>result</th></tr>{"".join(rows)}</table>
<h2>Faults injected</h2><table><tr><th>fault</th><th>setting</th><th>happened</th>
<th>evidence</th></tr>{faults}</table>
<h2>Counts</h2><table>{counts}</table>
<h2>Settings</h2><table>{settings}</table>
</body></html>
"""


def write_html(result: Result, path: Path) -> None:
    path.write_text(render(result))
