"""``paysim bench --timeline`` against a real paysim (the test's app on port 0, API faults on).

The bench runs in a worker thread (``trio.to_thread``; its one worker is a thread
too) while the app serves in the test's nursery, over real sockets: grpcio for
the load, httpx for ``/admin/faults``.

The timeline: "down" (every call UNAVAILABLE) for 1 s, then "up" (nothing) for
1 s; the load lasts as long as the timeline (no -n/-z). Calls are filed by the
phase in force when bench sent them, on bench's estimate of when the server
started the timeline (the PUT's midpoint), while the server decides by when the
call reaches its handler, and switches phase when its player's task wakes. On
a shared 2-core machine, with the server in this process (one GIL), those
differ by a few milliseconds: calls sent that close to the boundary can be
filed in the neighbouring phase. Allowed, in each direction: the calls of
``BOUNDARY_S`` (50 ms) at the phase's observed rate, plus the calls in flight.
Filing by any other rule (by end time, by the wrong phase) misses by hundreds.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from paysim.config import Settings
from paysim.loadgen import main, options
from paysim.loadgen.phases import BASE
from tests.grpc_helpers import AppHandle, make_settings
from tests.integration.faults.conftest import chaos_settings

DOWN_UP = """
name = "down-up"
[[phases]]
name = "down"
duration_s = 1
[phases.rpcs."*"]
error_rate = 1.0
error_codes = { unavailable = 1 }
[[phases]]
name = "up"
duration_s = 1
"""
IN_FLIGHT = 2
BOUNDARY_S = 0.05  # calls filed across the boundary, see the module docstring


@pytest.fixture
def settings() -> Settings:
    return chaos_settings()


def slack(row: dict[str, Any]) -> int:
    return math.ceil(float(row["rps"]) * BOUNDARY_S) + IN_FLIGHT


async def bench(app: AppHandle, *argv: str) -> tuple[int, str, str]:
    o = options.parse([f"127.0.0.1:{app.grpc_port}", "--no-progress", *argv])
    out, err = io.StringIO(), io.StringIO()
    status = await trio.to_thread.run_sync(lambda: main.run(o, out, err))
    return status, out.getvalue(), err.getvalue()


async def test_the_report_shows_unavailable_in_down_and_none_in_up(
    app: AppHandle, tmp_path: Path
) -> None:
    timeline = tmp_path / "down_up.toml"
    timeline.write_text(DOWN_UP)
    html = tmp_path / "report.html"
    status, out, err = await bench(
        app, "--timeline", str(timeline), "--fault-seed", "5", "-c", str(IN_FLIGHT),
        "--http-target", f"127.0.0.1:{app.http_port}", "-O", "json", "--html", str(html),
    )  # fmt: skip
    assert status == 0, err
    doc = json.loads(out)
    rows: dict[str, Any] = {r["name"]: r for r in doc["faults"]["by_phase"]}
    # The load ends with the timeline: a lane that checked the time just before the end
    # may send one last call just after it, under the base plan (at most one per lane).
    assert list(rows)[:2] == ["down", "up"]
    assert rows.get(BASE, {"calls": 0})["calls"] <= IN_FLIGHT
    down, up = rows["down"], rows["up"]
    assert down["calls"] > 10
    assert up["calls"] > 10
    assert set(down["errors_by_code"]) == {"UNAVAILABLE"}
    assert down["ok"] <= slack(down)
    assert up["errors_by_code"].get("UNAVAILABLE", 0) <= slack(up)
    assert set(up["errors_by_code"]) <= {"UNAVAILABLE"}
    assert sum(r["calls"] for r in rows.values()) == doc["summary"]["count"]
    # The server agreed with bench's clock at the start; the seed went with the timeline.
    start = doc["faults"]["checks"][0]
    assert (start["when"], start["server_phase"], start["agrees"]) == ("start", "down", True)
    assert doc["faults"]["seed"] == 5
    assert [row["phase"] for row in doc["timeline"][:2]] == ["down", "up"]
    assert html.read_text().count("class='phase'") == 4  # two bands on each of two charts
    # And the timeline was stopped: the base plan is in force again.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as admin:
        state = (await admin.get("/admin/faults")).json()
    assert state["timeline"] is None
    assert state["plan"] == state["base"]


async def test_a_server_without_api_faults_is_refused_with_exit_1(
    start_app: Any, tmp_path: Path
) -> None:
    plain = await start_app(make_settings())
    timeline = tmp_path / "down_up.toml"
    timeline.write_text(DOWN_UP)
    status, out, err = await bench(
        plain, "--timeline", str(timeline), "--http-target", f"127.0.0.1:{plain.http_port}"
    )
    assert status == 1
    assert out == ""
    assert err == (
        f"paysim bench: http://127.0.0.1:{plain.http_port}/admin/faults does not exist: "
        "API faults are off on that server (start it with CHAOS_API_ENABLED=true; "
        "they are refused in production)\n"
    )
