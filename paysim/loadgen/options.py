"""``paysim bench`` options: ghz's names where ghz has one, checked into a frozen ``Options``.

``add_arguments`` fills a parser (the CLI's ``bench`` subcommand);
``from_args`` turns what argparse read into ``Options`` or raises
``OptionsError``, whose ``str()`` is one line for the user (the CLI prints it
and exits 2). Everything that can be checked before a connection is made is
checked here, including the first rendered request against the call's type.

The load shape, as in ghz: ``--concurrency`` calls in flight over
``--connections`` connections, until ``--total`` calls were made or
``--duration`` passed. ``--rps`` turns the closed loop into an open loop: a
constant arrival rate, each call with an intended send time (see
``client.py``); ``--concurrency`` then caps the calls in flight.

``--timeline`` plays a fault timeline on the server during the load
(``fault_admin.py``); it is read and checked here, so a bad file fails before
anything starts. Without ``--total`` or ``--duration`` the load then lasts
as long as the timeline (one cycle of a repeating one) and ends with it.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paysim.faults.plan import PlanError
from paysim.faults.timeline import load_timeline
from paysim.loadgen import calls, template

DEFAULT_TARGET = "127.0.0.1:8030"
DEFAULT_HTTP_PORT = 8031  # paysim's HTTP endpoint beside its gRPC port 8030
DEFAULT_TOTAL = 200  # ghz's default
DEFAULT_LATENESS_MS = 10.0
DESCRIPTION = (
    "A ghz-style gRPC load generator for paysim's PaymentService: closed loop "
    "(--concurrency) or open loop at a constant rate (--rps), against a running server or "
    "one it starts itself (--spawn), with ghz's text report, JSON and a self-contained HTML."
)


class OptionsError(Exception):
    """A bad option; ``str()`` is the one-line message."""


@dataclass(frozen=True)
class Options:
    target: str | None  # None with --spawn: the spawned server's address
    call: str  # the short method name, e.g. "CreatePaymentIntent"
    data: str  # the request template (JSON text with placeholders)
    metadata: dict[str, str] = field(default_factory=dict)
    concurrency: int = 50
    connections: int = 1
    total: int | None = DEFAULT_TOTAL
    duration_s: float | None = None
    rps: float | None = None
    warmup_requests: int = 0
    warmup_s: float = 0.0
    timeout_s: float | None = 20.0  # None: no deadline (no grpc-timeout header)
    procs: int | None = None  # None: auto
    client_cores: tuple[int, ...] | None = None
    spawn: bool = False
    server_cores: tuple[int, ...] = (0,)
    server_env: dict[str, str] = field(default_factory=dict)
    events: bool = False
    intents: int = 0
    seed: int | None = None
    format: str = "text"
    output: Path | None = None
    json_path: Path | None = None
    html_path: Path | None = None
    progress: bool | None = None  # None: when stderr is a terminal
    lateness_ms: float = DEFAULT_LATENESS_MS
    timeline: str | None = None  # a shipped example's name or a TOML file, checked
    fault_seed: int | None = None
    http_target: str | None = None  # the HTTP endpoint (admin) of a given target
    until_timeline_ends: bool = False  # no --total/--duration: the timeline's length

    @property
    def open_loop(self) -> bool:
        return self.rps is not None

    def describe(self) -> dict[str, Any]:
        """The options as plain JSON values, for the reports."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``paysim bench`` options (ghz's flag names where it has one)."""
    parser.description = parser.description or DESCRIPTION
    a = parser.add_argument
    a("target", nargs="?", help=f"host:port of a running server (default {DEFAULT_TARGET})")
    a(
        "--call",
        default="CreatePaymentIntent",
        help="the RPC: " + ", ".join(calls.NAMES) + " (or payment.v1.PaymentService.NAME)",
    )
    a(
        "-d",
        "--data",
        help="request JSON, a template (see paysim/loadgen/template.py): "
        "{{n}} {{worker}} {{uuid}} {{timestamp}} {{timestamp_ms}} {{rand_int A B}} "
        "{{rand_string K}} {{choice A B}} {{cycle A B}} {{intent_id}}; default: a valid "
        "CreatePaymentIntent with reservation_id rsv_bench_{{n}}",
    )
    a("-D", "--data-file", type=Path, help="read the request template from this file")
    a("-m", "--metadata", help="call metadata as a JSON object of strings (templated values)")
    a("-c", "--concurrency", type=int, default=50, help="calls in flight (default 50)")
    a("--connections", type=int, default=1, help="connections (gRPC channels), default 1")
    a("-n", "--total", type=int, help=f"calls to make (default {DEFAULT_TOTAL})")
    a("-z", "--duration", help="run for this long instead of --total (e.g. 30s, 2m, 500ms)")
    a(
        "-r",
        "--rps",
        type=float,
        help="open loop: this constant arrival rate (calls/s); latency counts from each "
        "call's intended send time (no coordinated omission)",
    )
    a(
        "--warmup",
        default="0",
        help="calls (e.g. 5000) or a time (e.g. 5s) sent before measuring, not reported",
    )
    a(
        "-t",
        "--timeout",
        default="20s",
        help="deadline of each call (default 20s; 0: none, so no grpc-timeout header is sent)",
    )
    a(
        "--procs",
        default="auto",
        help="worker processes; auto: one per client core, at most --connections",
    )
    a("--client-cores", help="pin the workers to these cores (e.g. 1 or 2-3)")
    a(
        "--spawn",
        action="store_true",
        help="start `paysim serve` for the run (events off), pinned to --server-cores",
    )
    a("--server-cores", default="0", help="cores for the spawned server (default 0)")
    a(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the spawned server (repeatable)",
    )
    a("--events", action="store_true", help="leave the spawned server's event bus on")
    a(
        "--intents",
        type=int,
        default=0,
        help="make this many payment intents (scenario TIMEOUT, so they stay pending) "
        "before the run, for {{intent_id}}",
    )
    a("--seed", type=int, help="seed for the random placeholders")
    a("-O", "--format", choices=("text", "json"), default="text", help="report format")
    a("-o", "--output", type=Path, help="write the report here instead of stdout")
    a("--json", dest="json_path", type=Path, help="also write the JSON report here")
    a("--html", dest="html_path", type=Path, help="also write a self-contained HTML report")
    a(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default on: a live line on a terminal, else every 10 s)",
    )
    a("--lateness-ms", type=float, default=DEFAULT_LATENESS_MS,
      help="open loop: send lateness p99 above this means the generator fell behind")  # fmt: skip
    a(
        "--timeline",
        metavar="NAME_OR_FILE",
        help="play this fault timeline on the server during the load (a shipped example: "
        "ticket_on_sale, pg_partial_outage, regional_blip; or a TOML file); the report "
        "splits the calls by phase. Without -n/-z the load lasts as long as the timeline",
    )
    a("--fault-seed", type=int, help="with --timeline: the server's fault seed (default --seed)")
    a(
        "--http-target",
        metavar="HOST:PORT",
        help="with --timeline and a target: its HTTP endpoint, for /admin/faults "
        f"(default: the target's host, port {DEFAULT_HTTP_PORT})",
    )


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|s|m|h)")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, what: str) -> float:
    """``"1m30s"`` -> 90.0; a bare number is seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise OptionsError(f"{what}: {text!r} is not a duration (e.g. 500ms, 30s, 2m, 1m30s)")
    return total


def parse_cores(text: str, what: str) -> tuple[int, ...]:
    """``"0"``, ``"1,3"``, ``"2-3"`` -> core numbers, each present on this machine."""
    cores: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            cores.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise OptionsError(f"{what}: {text!r} is not a core list (e.g. 0, 1,3 or 2-3)") from None
    available = os.sched_getaffinity(0)
    missing = sorted(cores - available)
    if not cores or missing:
        raise OptionsError(
            f"{what}: core {missing[0] if missing else text} is not available here "
            f"(available: {','.join(map(str, sorted(available)))})"
        )
    return tuple(sorted(cores))


def _warmup(text: str) -> tuple[int, float]:
    """``--warmup``: a plain integer is a number of calls, anything else a duration."""
    if text.strip().isdigit():
        return int(text), 0.0
    return 0, parse_duration(text, "--warmup")


def _positive(value: float | None, what: str) -> None:
    if value is not None and value <= 0:
        raise OptionsError(f"{what}: must be positive, got {value:g}")


def _server_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionsError(f"--server-env: {pair!r} is not KEY=VALUE")
        env[key] = value
    return env


def _procs(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        procs = int(text)
    except ValueError:
        raise OptionsError(f"--procs: {text!r} is not a number or auto") from None
    _positive(procs, "--procs")
    return procs


def _data(args: argparse.Namespace, call: str) -> str:
    if args.data is not None and args.data_file is not None:
        raise OptionsError("give --data or --data-file, not both")
    if args.data_file is not None:
        try:
            return str(args.data_file.read_text())
        except OSError as exc:
            raise OptionsError(
                f"--data-file: cannot read {args.data_file}: {exc.strerror}"
            ) from None
    if args.data is not None:
        return str(args.data)
    return calls.default_data(call)


def _check_template(data: str, call: str, intents: int, seed: int | None) -> None:
    """Render request 0 now, so bad data fails before anything starts."""
    try:
        request = template.RequestTemplate(data, calls.request_type(call))
        if not request.static:
            fake = [f"pay_intent_{i}" for i in range(max(intents, 1))]
            rng = template.Context().rng
            rng.seed(seed)
            request.body(template.Context(n=0, worker=0, rng=rng, intents=fake))
    except template.TemplateError as exc:
        raise OptionsError(f"--data: {exc}") from None
    if template.uses(data, "intent_id") and intents <= 0:
        raise OptionsError("--data: {{intent_id}} needs payment intents made first: --intents N")


def _metadata(text: str | None) -> dict[str, str]:
    if text is None:
        return {}
    try:
        doc = template.parse_json_object(text, "--metadata")
        if not all(isinstance(value, str) for value in doc.values()):
            raise OptionsError("--metadata: values must be strings")
        pairs = {str(k): str(v) for k, v in doc.items()}
        template.MetadataTemplate(pairs)
    except template.TemplateError as exc:
        raise OptionsError(str(exc)) from None
    return pairs


def from_args(args: argparse.Namespace) -> Options:
    """Check everything argparse read; the frozen ``Options``, or ``OptionsError``."""
    call = calls.short_name(args.call)
    if call is None:
        raise OptionsError(f"--call: unknown method {args.call!r}; one of {', '.join(calls.NAMES)}")
    for value, what in ((args.concurrency, "--concurrency"), (args.connections, "--connections")):
        _positive(value, what)
    if args.connections > args.concurrency:
        raise OptionsError("--connections must not exceed --concurrency (each needs a call)")
    procs = _procs(args.procs)
    if procs is not None and procs > args.connections:
        raise OptionsError(
            "--procs must not exceed --connections (each worker process has its own connections)"
        )
    if args.total is not None and args.duration is not None:
        raise OptionsError("give --total or --duration, not both")
    _positive(args.total, "--total")
    duration = parse_duration(args.duration, "--duration") if args.duration else None
    _positive(duration, "--duration")
    timeline_s = _timeline_s(args)
    until_timeline_ends = timeline_s is not None and args.total is None and duration is None
    if until_timeline_ends:
        duration = timeline_s
    _positive(args.rps, "--rps")
    _positive(args.lateness_ms, "--lateness-ms")
    if args.intents < 0:
        raise OptionsError("--intents: must not be negative")
    warmup_requests, warmup_s = _warmup(args.warmup)
    timeout = parse_duration(args.timeout, "--timeout")
    if timeout < 0:
        raise OptionsError("--timeout: must not be negative")
    if args.spawn and args.target is not None:
        raise OptionsError("give a target or --spawn, not both")
    data = _data(args, call)
    _check_template(data, call, args.intents, args.seed)
    target = None if args.spawn else (args.target or DEFAULT_TARGET)
    if target is not None and not _HOST_PORT.fullmatch(target):
        raise OptionsError(f"target: {target!r} is not host:port")
    http_target = _http_target(args, target)
    return Options(
        target=target,
        call=call,
        data=data,
        metadata=_metadata(args.metadata),
        concurrency=args.concurrency,
        connections=args.connections,
        total=None if duration is not None else (args.total or DEFAULT_TOTAL),
        duration_s=duration,
        rps=args.rps,
        warmup_requests=warmup_requests,
        warmup_s=warmup_s,
        timeout_s=timeout or None,
        procs=procs,
        client_cores=parse_cores(args.client_cores, "--client-cores")
        if args.client_cores
        else None,
        spawn=args.spawn,
        server_cores=parse_cores(args.server_cores, "--server-cores"),
        server_env=_server_env(args.server_env),
        events=args.events,
        intents=args.intents,
        seed=args.seed,
        format=args.format,
        output=args.output,
        json_path=args.json_path,
        html_path=args.html_path,
        progress=args.progress,
        lateness_ms=args.lateness_ms,
        timeline=args.timeline,
        fault_seed=args.fault_seed if args.fault_seed is not None else args.seed,
        http_target=http_target,
        until_timeline_ends=until_timeline_ends,
    )


_HOST_PORT = re.compile(r"\[?[\w.:-]+\]?:\d+")


def _timeline_s(args: argparse.Namespace) -> float | None:
    """Check ``--timeline`` now (exit 2 on a bad file); its length (one cycle), or None."""
    if args.timeline is None:
        for flag, value in (("--fault-seed", args.fault_seed), ("--http-target", args.http_target)):
            if value is not None:
                raise OptionsError(f"{flag} goes with --timeline")
        return None
    try:
        return load_timeline(args.timeline).duration_s
    except PlanError as exc:
        raise OptionsError(f"--timeline: {exc}") from None


def _http_target(args: argparse.Namespace, target: str | None) -> str | None:
    """With --timeline and a target: the HTTP endpoint as given, else the target's host:8031."""
    if args.timeline is None or target is None:
        if args.http_target is not None and target is None:
            raise OptionsError("--http-target goes with a target, not --spawn")
        return None
    if args.http_target is None:
        return f"{target.rpartition(':')[0]}:{DEFAULT_HTTP_PORT}"
    if not _HOST_PORT.fullmatch(args.http_target):
        raise OptionsError(f"--http-target: {args.http_target!r} is not host:port")
    return str(args.http_target)


def parse(argv: list[str]) -> Options:
    """Parse ``paysim bench`` arguments alone (tests, and ``python -m paysim.loadgen``)."""
    parser = argparse.ArgumentParser(prog="paysim bench")
    add_arguments(parser)
    return from_args(parser.parse_args(argv))
