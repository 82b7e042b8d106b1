"""``paysim chaos`` options: the command line, parsed once into a frozen value.

Every fault is on by default, at rates that a healthy platform must survive
(``--no-faults`` turns them all off, then each can be turned back on). A bad
value is an ``OptionsError`` naming the option; the CLI prints it and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path

from paysim.chaos.scenarios import DEFAULT_MIX, SCENARIOS

DEV_SECRET = "payment-sim-dev-secret"


class OptionsError(Exception):
    """One option has a bad value; ``str()`` is the one-line message."""


@dataclass(frozen=True)
class Windows:
    """``count`` windows of ``seconds`` each (receiver down, EventBridge unreachable)."""

    count: int = 0
    seconds: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.count > 0 and self.seconds > 0


@dataclass(frozen=True)
class Faults:
    webhook_5xx: float = 0.05
    webhook_timeout: float = 0.02
    webhook_reset: float = 0.03
    receiver_down: Windows = Windows(2, 1.5)
    duplicate_rate: float = 0.05  # server: CHAOS_WEBHOOK_DUPLICATE_RATE
    reorder_rate: float = 0.2  # server: CHAOS_WEBHOOK_REORDER_RATE
    events_outage: Windows = Windows(1, 3.0)
    sigterm: bool = True

    def enabled(self) -> dict[str, bool]:
        """Which faults are on, by the names the report uses."""
        return {
            "webhook 5xx": self.webhook_5xx > 0,
            "webhook timeout": self.webhook_timeout > 0,
            "webhook connection reset": self.webhook_reset > 0,
            "receiver down": self.receiver_down.enabled,
            "duplicate delivery": self.duplicate_rate > 0,
            "out-of-order delivery": self.reorder_rate > 0,
            "EventBridge outage": self.events_outage.enabled,
            "SIGTERM": self.sigterm,
        }


NO_FAULTS = Faults(0.0, 0.0, 0.0, Windows(), 0.0, 0.0, Windows(), False)


@dataclass(frozen=True)
class Options:
    count: int = 1000
    rate: float = 100.0
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int = 0
    faults: Faults = Faults()
    events: str = "moto"  # moto (EventBridge -> rule -> SQS in moto's server) or sink
    moto_shards: int = 2  # moto servers behind the events endpoint (connections round robin)
    time_scale: float = 0.01
    random_approve_rate: float = 0.7
    sigma: float = 4.5
    webhook_timeout_ms: int = 300
    secret: str = ""
    target: str | None = None  # host:port of a running paysim; None: start one
    receiver_host: str = "127.0.0.1"
    receiver_port: int = 0
    queue_url: str | None = None  # with --target: where its events land
    settle_timeout_s: float = 60.0
    progress_s: float = 5.0
    json_path: Path | None = None
    html_path: Path | None = None
    channels: int = 2
    concurrency: int = 32
    caller: bool = False  # --caller: a naive and a correct payment client (caller_run)
    timeline: str | None = None  # --timeline: a shipped example's name or a TOML path
    http_target: str | None = None  # with --target and --caller: its HTTP port

    @property
    def load_seconds(self) -> float:
        return self.count / self.rate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    load = parser.add_argument_group("load")
    load.add_argument("--count", type=int, help="payments to create (default 1000)")
    load.add_argument("--duration", type=float, help="seconds of load instead: count = rate x this")
    load.add_argument("--rate", type=float, default=100.0, help="creates per second (100)")
    mix = ",".join(f"{k}={v:g}" for k, v in DEFAULT_MIX.items())
    load.add_argument("--mix", default=mix, help=f"scenario weights ({mix})")
    load.add_argument("--seed", type=int, help="makes the run reproducible (default: random)")
    load.add_argument("--time-scale", type=float, default=0.01, help="SIMULATION_TIME_SCALE")
    load.add_argument("--random-approve-rate", type=float, default=0.7, help="RANDOM_APPROVE_RATE")
    load.add_argument("--sigma", type=float, default=4.5, help="RANDOM ratio bound, in sigmas")
    load.add_argument("--channels", type=int, default=2, help="gRPC connections (2)")
    load.add_argument("--concurrency", type=int, default=32, help="gRPC calls in flight (32)")

    faults = parser.add_argument_group("faults (all on by default)")
    faults.add_argument("--no-faults", action="store_true", help="start from no faults at all")
    faults.add_argument("--webhook-5xx", type=float, help="P(receiver answers 5xx) (0.05)")
    faults.add_argument("--webhook-timeout", type=float, help="P(receiver too slow) (0.02)")
    faults.add_argument("--webhook-reset", type=float, help="P(connection reset) (0.03)")
    faults.add_argument(
        "--receiver-down", metavar="N:SECONDS", help="receiver down windows (2:1.5)"
    )
    faults.add_argument("--duplicate-rate", type=float, help="server-side duplicates (0.05)")
    faults.add_argument("--reorder-rate", type=float, help="server-side out-of-order (0.2)")
    faults.add_argument(
        "--events-outage", metavar="N:SECONDS", help="EventBridge unreachable windows (1:3)"
    )
    faults.add_argument(
        "--sigterm", action=argparse.BooleanOptionalAction, help="SIGTERM the server at the end"
    )

    target = parser.add_argument_group("where")
    target.add_argument(
        "--events",
        choices=("moto", "sink"),
        default="moto",
        help="moto: EventBridge, rule and SQS in moto's server (real, slow: under 200 events/s); "
        "sink: an in-process PutEvents stand-in with a local queue",
    )
    target.add_argument(
        "--moto-shards",
        type=int,
        default=2,
        help="moto servers the events endpoint spreads connections over (2; one saturates a core)",
    )
    target.add_argument(
        "--target", metavar="HOST:PORT", help="a running paysim (default: start one)"
    )
    target.add_argument("--secret", help="WEBHOOK_SECRET (default: a fresh one, or the dev secret)")
    target.add_argument("--receiver-host", default="127.0.0.1", help="receiver address")
    target.add_argument("--receiver-port", type=int, default=0, help="receiver port (any free)")
    target.add_argument("--queue-url", help="with --target: the SQS queue its events reach")
    target.add_argument(
        "--webhook-timeout-ms", type=int, default=300, help="the server's WEBHOOK_TIMEOUT_MS"
    )

    caller = parser.add_argument_group("caller mode (faults at the API, not the webhooks)")
    caller.add_argument(
        "--caller",
        action="store_true",
        help="drive a naive and a correct payment client through API faults and check that "
        "/reconciliation counts exactly the naive one's double charges",
    )
    caller.add_argument("--timeline", help="fault timeline: an example's name or a TOML file")
    caller.add_argument("--http-target", metavar="HOST:PORT", help="with --target: its HTTP port")

    out = parser.add_argument_group("output")
    out.add_argument(
        "--settle-timeout", type=float, default=60.0, help="seconds to wait at the end"
    )
    out.add_argument("--progress", type=float, default=5.0, help="progress every N s (0: quiet)")
    out.add_argument("--json", type=Path, help="write the results here")
    out.add_argument("--html", type=Path, help="write a self-contained HTML report here")


def from_args(args: argparse.Namespace) -> Options:
    rate = _positive("--rate", args.rate)
    if args.count is not None and args.duration is not None:
        raise OptionsError("--count and --duration: give one of them")
    if args.duration is not None:
        count = round(rate * _positive("--duration", args.duration))
    else:
        count = args.count if args.count is not None else 1000
    if count < 1:
        raise OptionsError("--count: must be at least 1")
    if args.target and args.events == "sink":
        raise OptionsError("--events sink: only for a server started here (it must publish there)")
    target = _host_port(args.target) if args.target else None
    caller = bool(getattr(args, "caller", False))
    http_target = getattr(args, "http_target", None)
    if caller and target is not None and not http_target:
        raise OptionsError("--caller with --target: give --http-target HOST:PORT too")
    timeline = getattr(args, "timeline", None)
    if timeline is not None and not caller:
        raise OptionsError("--timeline: only with --caller")
    faults = _faults(args, external=target is not None)
    return Options(
        count=count,
        rate=rate,
        mix=parse_mix(args.mix),
        seed=args.seed if args.seed is not None else random.SystemRandom().randrange(2**31),
        faults=faults,
        events=args.events,
        moto_shards=int(_positive("--moto-shards", args.moto_shards)),
        time_scale=_between("--time-scale", args.time_scale, 1e-6, 1.0),
        random_approve_rate=_between("--random-approve-rate", args.random_approve_rate, 0.0, 1.0),
        sigma=_positive("--sigma", args.sigma),
        webhook_timeout_ms=int(_positive("--webhook-timeout-ms", args.webhook_timeout_ms)),
        secret=args.secret or (DEV_SECRET if target else ""),
        target=target,
        receiver_host=args.receiver_host,
        receiver_port=args.receiver_port,
        queue_url=args.queue_url,
        settle_timeout_s=_positive("--settle-timeout", args.settle_timeout),
        progress_s=max(0.0, args.progress),
        json_path=args.json,
        html_path=args.html,
        channels=int(_positive("--channels", args.channels)),
        concurrency=int(_positive("--concurrency", args.concurrency)),
        caller=caller,
        timeline=_timeline(timeline),
        http_target=_host_port(http_target) if http_target else None,
    )


def _timeline(spec: str | None) -> str | None:
    """The timeline spec, once it is known to load (a bad one is an option error)."""
    if spec is None:
        return None
    from paysim.faults.plan import PlanError
    from paysim.faults.timeline import load_timeline

    try:
        load_timeline(spec)
    except PlanError as exc:
        raise OptionsError(f"--timeline: {exc}") from None
    return spec


def _faults(args: argparse.Namespace, *, external: bool) -> Faults:
    base = NO_FAULTS if args.no_faults else Faults()
    if external:  # server-side knobs, the outage and SIGTERM need a server started here
        base = dataclasses.replace(
            base, duplicate_rate=0.0, reorder_rate=0.0, events_outage=Windows(), sigterm=False
        )

    def rate(option: str, value: float | None, default: float) -> float:
        return default if value is None else _between(option, value, 0.0, 1.0)

    faults = Faults(
        webhook_5xx=rate("--webhook-5xx", args.webhook_5xx, base.webhook_5xx),
        webhook_timeout=rate("--webhook-timeout", args.webhook_timeout, base.webhook_timeout),
        webhook_reset=rate("--webhook-reset", args.webhook_reset, base.webhook_reset),
        receiver_down=_windows("--receiver-down", args.receiver_down, base.receiver_down),
        duplicate_rate=rate("--duplicate-rate", args.duplicate_rate, base.duplicate_rate),
        reorder_rate=rate("--reorder-rate", args.reorder_rate, base.reorder_rate),
        events_outage=_windows("--events-outage", args.events_outage, base.events_outage),
        sigterm=base.sigterm if args.sigterm is None else args.sigterm,
    )
    if faults.webhook_5xx + faults.webhook_timeout + faults.webhook_reset >= 1.0:
        raise OptionsError("--webhook-5xx + --webhook-timeout + --webhook-reset: must be below 1")
    if external and (faults.duplicate_rate or faults.reorder_rate or faults.events_outage.enabled):
        raise OptionsError(
            "--duplicate-rate, --reorder-rate, --events-outage: need a server started here "
            "(set CHAOS_WEBHOOK_* on your server instead)"
        )
    if external and faults.sigterm:
        raise OptionsError("--sigterm: only for a server started here")
    return faults


def parse_mix(spec: str) -> dict[str, float]:
    """``approve=30,fail=10`` into weights; unknown names and non-positive totals are errors."""
    mix: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, weight = part.strip().partition("=")
        if not sep or name not in SCENARIOS:
            known = ", ".join(SCENARIOS)
            raise OptionsError(
                f"--mix: expected name=weight with a name among {known}; got {part!r}"
            )
        try:
            mix[name] = float(weight)
        except ValueError:
            raise OptionsError(f"--mix: {name}: expected a number, got {weight!r}") from None
        if mix[name] < 0:
            raise OptionsError(f"--mix: {name}: a weight cannot be negative")
    if sum(mix.values()) <= 0:
        raise OptionsError("--mix: the weights add up to nothing")
    return {k: v for k, v in mix.items() if v > 0}


def _windows(option: str, spec: str | None, default: Windows) -> Windows:
    if spec is None:
        return default
    count, sep, seconds = spec.partition(":")
    try:
        windows = Windows(int(count), float(seconds)) if sep else Windows(int(count), 0.0)
    except ValueError:
        raise OptionsError(f"{option}: expected N:SECONDS like 2:1.5, got {spec!r}") from None
    if windows.count < 0 or windows.seconds < 0 or (windows.count and not windows.seconds):
        raise OptionsError(f"{option}: expected N:SECONDS with SECONDS > 0 (0:0 turns it off)")
    return windows


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionsError(f"--target: expected HOST:PORT, got {value!r}")
    return value


def _positive(option: str, value: float) -> float:
    if not value > 0:
        raise OptionsError(f"{option}: must be positive, got {value}")
    return float(value)


def _between(option: str, value: float, low: float, high: float) -> float:
    if not low <= value <= high:
        raise OptionsError(f"{option}: must be between {low:g} and {high:g}, got {value}")
    return float(value)
