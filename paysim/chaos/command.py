"""``paysim chaos`` as a command: options, dependencies, the run, the outputs, the exit status.

Exit status: 0 when every invariant held, 1 on any violation, 130 when
interrupted (Ctrl-C or SIGTERM: every process it started is stopped first), 2
for a bad option or a missing dependency (grpcio, and moto's server unless
``--events sink`` or ``--target``: both come with the dev extra). The table
goes to stdout; progress and the seed (so that the run can be repeated) to
stderr. Nothing heavy is imported until the options are known to be good.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import signal
import sys
from collections.abc import Sequence

from paysim.chaos.options import Options, OptionsError, add_arguments, from_args

__all__ = ["add_arguments", "repeat_command", "run_from_args"]


def repeat_command(options: Options, argv: Sequence[str]) -> str:
    """This run's command line with its seed, to repeat it."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--seed":
            skip = True
        elif not arg.startswith("--seed="):
            args.append(arg)
    return shlex.join(["paysim", "chaos", *args, f"--seed={options.seed}"])


def missing_dependencies(options: Options) -> list[str]:
    needed = {"grpc": "grpcio"}
    if options.target is None and options.events == "moto" and not options.caller:
        needed["moto"] = "moto[server]"
    return [
        package for module, package in needed.items() if importlib.util.find_spec(module) is None
    ]


def run_from_args(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run ``paysim chaos`` with parsed ``args``; ``argv`` (after "chaos") is for the report."""
    try:
        options = from_args(args)
    except OptionsError as exc:
        print(f"paysim chaos: {exc}", file=sys.stderr)
        return 2
    missing = missing_dependencies(options)
    if missing:
        print(
            f"paysim chaos needs {' and '.join(missing)}: pip install -e '.[dev]'", file=sys.stderr
        )
        return 2
    import trio

    from paysim.chaos.html_report import write_html
    from paysim.chaos.report import print_table, write_json
    from paysim.chaos.run import ChaosRun

    command = repeat_command(options, argv)
    print(f"paysim chaos: seed {options.seed}; repeat with: {command}", file=sys.stderr, flush=True)
    if options.caller:
        return _run_caller(options)
    # SIGTERM (a CI timeout, `timeout`) becomes a Ctrl-C, which trio turns into a
    # cancellation: every process the run started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))
    try:
        result = trio.run(ChaosRun(options, sys.stderr, command).execute)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:  # trio groups what it cancels
        if isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is None:
            raise
        print("paysim chaos: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    print_table(result, sys.stdout)
    if options.json_path is not None:
        write_json(result, options.json_path)
    if options.html_path is not None:
        write_html(result, options.html_path)
    return 0 if result.passed else 1


def _run_caller(options: Options) -> int:
    """``--caller``: the naive and the correct client; 0 when the report counted exactly."""
    import json

    import trio

    from paysim.chaos.caller_run import CallerRun

    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))
    try:
        result = trio.run(CallerRun(options, sys.stderr).execute)
    except KeyboardInterrupt:
        print("paysim chaos: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    for turn in result.turns:
        t = turn.to_dict()
        print(
            f"{t['caller']:8} {'PASS' if turn.passed else 'FAIL'}  "
            f"reservations {t['reservations']}  caused {t['caused']['double_charges']} "
            f"double charges ({t['caused']['extra_captures']} extra captures); "
            f"report {t['report']['double_charges']} ({t['report']['extra_captures']})"
        )
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", "utf-8")
    return 0 if result.passed else 1
