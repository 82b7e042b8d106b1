"""The ``paysim`` command: parse arguments, build Settings once, run.

Exit status: 0 after a clean shutdown, 2 for bad configuration (one line on
stderr naming the variable), 1 when the service cannot start (e.g. a port is
already taken: we never share a port silently).

``paysim serve --workers N`` (N > 1) runs N server processes that share the
ports through SO_REUSEPORT, under ``paysim.supervisor``; it needs the shared
store (STORE_URL), since every process must see every payment.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence

from paysim import __version__, process
from paysim.chaos import options as chaos_options
from paysim.config import ConfigError, Settings
from paysim.loadgen import options as bench_options
from paysim.webhooks import verify_cli


def _worker_count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paysim",
        description="A payment-gateway simulator: gRPC API on :8030, health and metrics on :8031.",
    )
    parser.add_argument("--version", action="version", version=f"paysim {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser(
        "serve",
        help="run the gRPC service (configured by environment)",
        description="Run the payment API: gRPC on GRPC_PORT (8030), health and metrics on "
        "HTTP_PORT (8031). Every setting is an environment variable (README, Configuration); "
        "without AWS, set EVENTS_ENABLED=false.",
    )
    serve.add_argument("--grpc-port", type=int, help="overrides GRPC_PORT")
    serve.add_argument("--http-port", type=int, help="overrides HTTP_PORT")
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="run N server processes that share the gRPC and HTTP ports (SO_REUSEPORT), "
        "to use N cores; a worker that dies is restarted. N > 1 needs STORE_URL (Redis): "
        "the processes must share their payments. Default 1: one process, no supervisor",
    )
    sub.add_parser(
        "worker",
        help="run the SQS reservation worker (health and metrics on :8040)",
        description="Consume payment events from SQS and confirm or cancel the reservations.",
    )
    dev = sub.add_parser(
        "dev",
        help="the whole local stack: AWS emulator, API, worker, webhook receiver",
        description="Run the whole local stack in one terminal, no Docker, no AWS account: "
        "an AWS emulator (EventBridge, SQS), the API (gRPC :8030, HTTP :8031), the "
        "reservation worker (:8040), a webhook receiver (:8050) and a reservation-service "
        "stand-in (:8060) that print what they receive. Ctrl-C stops it in order; a second "
        "Ctrl-C stops at once.",
    )
    dev.add_argument("--grpc-port", type=int, help="overrides GRPC_PORT (8030)")
    dev.add_argument("--http-port", type=int, help="overrides HTTP_PORT (8031)")
    dev.add_argument("--worker-port", type=int, help="overrides WORKER_HTTP_PORT (8040)")
    dev.add_argument("--receiver-port", type=int, default=8050, help="webhook receiver port")
    dev.add_argument(
        "--reservations-port",
        type=int,
        default=8060,
        help="reservation-service stand-in port (RESERVATION_API_URL of the worker)",
    )
    webhook = sub.add_parser(
        "webhook",
        help="webhook tools",
        description="Tools for the webhooks paysim sends.",
    )
    webhook_sub = webhook.add_subparsers(dest="webhook_command", required=True)
    verify = webhook_sub.add_parser(
        "verify",
        help="check a received webhook's signature and timestamp (exit 0 if valid)",
        description="Check a received webhook's signature and timestamp against the secret "
        "(both signature styles); exit 0 if valid, 1 if not.",
    )
    verify_cli.add_arguments(verify)
    bench = sub.add_parser(
        "bench",
        help="ghz-style gRPC load generator for this API (see paysim bench --help)",
    )
    bench_options.add_arguments(bench)
    chaos = sub.add_parser(
        "chaos",
        help="scenario runs with injected faults that check the platform-facing promises",
        description="Drive a weighted mix of payments with faults injected on every side, "
        "then verify the invariants (exit 1 on any violation). See README, Chaos.",
    )
    chaos_options.add_arguments(chaos)
    return parser


def api_ports(settings: Settings) -> dict[int, str]:
    """The API's ports and the settings that choose them, for the port-in-use message."""
    return {settings.grpc.port: "GRPC_PORT", settings.http.port: "HTTP_PORT"}


def serve(settings: Settings) -> int:
    from paysim import app, runtime, supervisor
    from paysim.observability import logging as paysim_logging

    def on_serving() -> None:
        runtime.freeze_startup_objects()
        supervisor.report_serving()  # a worker of serve --workers tells its supervisor

    paysim_logging.configure(settings.log.level, settings.log.json, process="api")
    runtime.tune_gc(settings.gc_thresholds)
    return process.run_main(
        "paysim", functools.partial(app.run, settings, on_serving=on_serving), api_ports(settings)
    )


def serve_workers(settings: Settings, env: dict[str, str], workers: int) -> int:
    """``serve --workers N``: N processes sharing the ports, under the supervisor."""
    if not settings.store.shared:
        problem = ConfigError(
            "STORE_URL",
            f"--workers {workers} runs processes that must share their payments: "
            "set STORE_URL to a Redis URL",
        )
        print(f"paysim: configuration error: {problem}", file=sys.stderr)
        return 2
    from paysim import supervisor
    from paysim.observability import logging as paysim_logging

    paysim_logging.configure(settings.log.level, settings.log.json)
    return supervisor.run(workers, settings, env)


def dev(settings: Settings, receiver_port: int, reservations_port: int) -> int:
    from paysim import devstack, runtime
    from paysim.observability import logging as paysim_logging

    try:
        import moto.server  # noqa: F401
    except ImportError:
        print(
            "paysim dev needs the AWS emulator: pip install 'paysim[local]' (moto[server])",
            file=sys.stderr,
        )
        return 2
    paysim_logging.configure(settings.log.level, settings.log.json, process="api")
    runtime.tune_gc(settings.gc_thresholds)
    return process.run_main(
        "paysim dev",
        functools.partial(
            devstack.run_dev, settings, devstack.DevPorts(receiver_port, reservations_port)
        ),
        {
            **api_ports(settings),
            receiver_port: "--receiver-port",
            reservations_port: "--reservations-port",
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "webhook":
        return verify_cli.main(args)
    if args.command == "chaos":
        from paysim.chaos.command import run_from_args as run_chaos

        return run_chaos(args, list(argv)[1:] if argv is not None else sys.argv[2:])
    if args.command == "bench":
        from paysim.loadgen.main import run_from_args

        return run_from_args(args)
    env = dict(os.environ)
    if getattr(args, "grpc_port", None) is not None:
        env["GRPC_PORT"] = str(args.grpc_port)
    if getattr(args, "http_port", None) is not None:
        env["HTTP_PORT"] = str(args.http_port)
    if getattr(args, "worker_port", None) is not None:
        env["WORKER_HTTP_PORT"] = str(args.worker_port)
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(f"paysim: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        workers = getattr(args, "workers", 1)
        return serve_workers(settings, env, workers) if workers > 1 else serve(settings)
    if args.command == "worker":
        from paysim.worker.app import worker_main

        return worker_main(settings)
    if args.command == "dev":
        return dev(settings, args.receiver_port, args.reservations_port)
    return 2  # pragma: no cover - argparse rejects unknown commands
