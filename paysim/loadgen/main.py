"""``paysim bench``: orchestration of one run, from options to the written reports.

The steps, in order: start the server when ``--spawn`` (``spawn.py``); make
the payment intents for ``{{intent_id}}`` (``--intents``); split the load into
one ``Plan`` per worker; start the workers (``pool.py``), which connect and
warm up; release them all at one common time; print progress while they run;
merge what they measured (``results.py``); judge who was the bottleneck from
the CPU each side used (``bottleneck.py``); render and write the reports
(``report.py``, ``html_report.py``).

With ``--timeline`` the spawned server runs with API faults on
(ENVIRONMENT=staging, CHAOS_API_ENABLED=true, before ``--server-env``); the
timeline starts once the workers are ready, just before the common start,
and is stopped when the load ends, also after an error or Ctrl-C
(``fault_admin.py``). The workers file each call under the phase in force
when it was sent (``phases.py``).

How many workers: ``--procs N``, or by default one per client core (the
``--client-cores``, else the cores this process may use, less the spawned
server's), at most ``--connections`` (each worker has its own connections)
and at most the number of calls. One worker runs in a thread of this
process, pinned with it; several run in processes, worker ``i`` pinned to
client core ``i mod cores``.

Exit status: 0 when the run was made (whatever the calls answered: the
report says), 1 when it could not be (the server did not start, the target
cannot be reached, a worker died), 2 for bad options, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
import grpc.aio

from paysim._proto.proto.payment.v1 import payment_pb2
from paysim.faults.plan import PlanError
from paysim.faults.timeline import load_timeline
from paysim.loadgen import (
    bottleneck,
    calls,
    client,
    fault_admin,
    html_report,
    procstat,
    report,
    spawn,
)
from paysim.loadgen.options import Options, OptionsError, add_arguments, from_args
from paysim.loadgen.pool import RunError, WorkerPool
from paysim.loadgen.progress import ProgressLine
from paysim.loadgen.results import Stats, merge_all
from paysim.loadgen.template import Context, RequestTemplate

START_MARGIN_S = 0.1  # between telling the workers the start time and that time
INTENT_CONCURRENCY = 64
CONNECT_CHECK_S = 5.0
FAULTS_ENV = {"ENVIRONMENT": "staging", "CHAOS_API_ENABLED": "true"}  # refused in production


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def available_cores() -> tuple[int, ...]:
    return tuple(sorted(os.sched_getaffinity(0)))


def client_cores(options: Options) -> tuple[int, ...] | None:
    """The cores the workers may use: as given, else (with --spawn) all but the server's."""
    if options.client_cores:
        return options.client_cores
    if options.spawn:
        rest = tuple(c for c in available_cores() if c not in options.server_cores)
        return rest or None
    return None


def worker_count(options: Options, cores: tuple[int, ...] | None) -> int:
    """``--procs``, or one per client core, at most --connections and the number of calls."""
    procs = options.procs or len(cores or available_cores())
    procs = min(procs, options.connections)
    if options.total is not None:
        procs = min(procs, options.total)
    return max(procs, 1)


def split(
    options: Options,
    target: str,
    intents: tuple[str, ...],
    procs: int,
    cores: tuple[int, ...] | None,
) -> list[client.Plan]:
    """One ``Plan`` per worker: even shares, the remainders to the first workers."""
    plans = []
    for i in range(procs):
        plans.append(
            client.Plan(
                index=i,
                procs=procs,
                target=target,
                call=options.call,
                data=options.data,
                metadata=options.metadata,
                concurrency=_share(options.concurrency, procs, i),
                connections=_share(options.connections, procs, i),
                total=None if options.total is None else _share(options.total, procs, i),
                duration_s=options.duration_s,
                rps=options.rps,
                warmup_requests=_share(options.warmup_requests, procs, i),
                warmup_s=options.warmup_s,
                timeout_s=options.timeout_s,
                seed=options.seed,
                intents=intents,
                cores=None if cores is None else (cores[i % len(cores)],),
            )
        )
    return plans


async def _make_intents(target: str, count: int, timeout_s: float | None) -> tuple[str, ...]:
    """``count`` pending payment intents (scenario TIMEOUT) for ``{{intent_id}}``."""
    template = RequestTemplate(calls.INTENT_DATA, calls.request_type("CreatePaymentIntent"))
    ids: list[str] = [""] * count
    async with client.open_channel(target) as channel:
        create = channel.unary_unary(
            calls.path("CreatePaymentIntent"),
            response_deserializer=payment_pb2.CreatePaymentIntentResponse.FromString,
        )
        next_index = iter(range(count))

        async def lane() -> None:
            for i in next_index:
                try:
                    answer = await create(template.body(Context(n=i)), timeout=timeout_s)
                except grpc.aio.AioRpcError as exc:
                    raise RunError(
                        f"--intents: CreatePaymentIntent failed: {exc.code().name}: {exc.details()}"
                    ) from None
                ids[i] = answer.payment_intent_id

        await asyncio.gather(*(lane() for _ in range(min(INTENT_CONCURRENCY, count))))
    return tuple(ids)


def _pin_this_process(cores: tuple[int, ...]) -> None:
    """Pin every thread of this process (grpcio's too) to ``cores``."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cores)


@dataclass
class _Cpu:
    """CPU counters and the clock, read just before the start and just after the end."""

    server: float | None
    host: float | None
    main: float
    clock: float

    @classmethod
    def read(cls, server: spawn.SpawnedServer | None) -> _Cpu:
        return cls(
            server.cpu_s() if server else None,
            procstat.host_busy_s(),
            time.process_time(),
            time.monotonic(),
        )


@dataclass(frozen=True)
class _CpuUse:
    """What was used between two readings; ``window_s`` is the time between them."""

    server: float | None
    host: float | None
    main: float
    window_s: float

    @classmethod
    def between(cls, before: _Cpu, after: _Cpu) -> _CpuUse:
        server = None
        if before.server is not None and after.server is not None:
            server = after.server - before.server
        host = None if before.host is None or after.host is None else after.host - before.host
        return cls(server, host, after.main - before.main, after.clock - before.clock)


def _foreign_share(cpu: _CpuUse, stats: Stats, processes: bool) -> float | None:
    """Cores' worth of CPU used by processes other than ours; known only with --spawn
    (otherwise the server under test is one of those "other" processes)."""
    if cpu.host is None or cpu.server is None:
        return None
    ours = cpu.server + cpu.main + (sum(stats.cpu_by_worker) if processes else 0.0)
    return max(cpu.host - ours, 0.0) / max(cpu.window_s, 1e-9)


def _assess(
    options: Options,
    stats: Stats,
    cpu: _CpuUse,
    processes: bool,
    cores: tuple[int, ...] | None,
) -> bottleneck.Assessment:
    return bottleneck.assess(
        bottleneck.Inputs(
            wall_s=stats.wall_s,
            worker_cpu_s=stats.cpu_by_worker,
            client_cores=cores,
            server_cpu_s=cpu.server,
            server_cores=len(options.server_cores),
            foreign_share=_foreign_share(cpu, stats, processes),
            rps=options.rps,
            offered_rps=stats.offered_rps(options.rps) if options.rps else None,
            lateness_p99_s=stats.lateness.percentile(0.99) if options.rps else None,
            lateness_limit_s=options.lateness_ms / 1e3,
        )
    )


def check_reachable(target: str) -> None:
    """Fail fast with the reason when nothing listens (grpcio would retry quietly)."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_CHECK_S):
            pass
    except OSError as exc:
        raise RunError(f"cannot connect to {target}: {exc.strerror or exc}") from None


def _server_env(options: Options) -> dict[str, str]:
    """The spawned server's extra environment: API faults on with --timeline, then ours."""
    return {**(FAULTS_ENV if options.timeline else {}), **options.server_env}


def _playing(
    options: Options, server: spawn.SpawnedServer | None, stderr: TextIO
) -> contextlib.AbstractContextManager[fault_admin.Playing | None]:
    """Start the timeline (stopped on exit), or nothing without --timeline."""
    if options.timeline is None:
        return contextlib.nullcontext()
    try:
        timeline = load_timeline(options.timeline)  # checked by the options: read again
    except PlanError as exc:
        raise RunError(f"--timeline: {exc}") from None
    http_target = f"127.0.0.1:{server.http_port}" if server else options.http_target
    assert http_target is not None
    return fault_admin.playing(http_target, timeline, options.fault_seed, stderr)


def execute(options: Options, stderr: TextIO) -> dict[str, Any]:
    """Make the run; the report document. Raises RunError or SpawnError."""
    cores = client_cores(options)
    if options.spawn and cores and set(cores) & set(options.server_cores):
        print("paysim bench: warning: client and server cores overlap", file=stderr)
    with contextlib.ExitStack() as stack:
        server = None
        if options.spawn:
            server = stack.enter_context(
                spawn.spawned_server(options.server_cores, options.events, _server_env(options))
            )
        target = server.target if server else options.target
        assert target is not None
        check_reachable(target)
        intents: tuple[str, ...] = ()
        if options.intents:
            intents = asyncio.run(_make_intents(target, options.intents, options.timeout_s))
        procs = worker_count(options, cores)
        processes = procs > 1
        if not processes and cores:
            _pin_this_process(cores)
        plans = split(options, target, intents, procs, cores)
        pool = stack.enter_context(WorkerPool(plans, processes))
        pool.wait_ready()
        progress = ProgressLine(stderr, options.progress, options.total)
        with _playing(options, server, stderr) as faults:
            before = _Cpu.read(server)
            t0 = time.monotonic() + START_MARGIN_S
            clock = faults.clock(t0) if faults else None
            duration = clock.end_s if clock and options.until_timeline_ends else None
            progress.start(t0)
            pool.start(t0, clock, duration)
            try:
                parts = pool.collect(progress)
            finally:
                progress.finish()
            cpu = _CpuUse.between(before, _Cpu.read(server))
            if faults:
                faults.check("end")
        stats = merge_all(parts)
        assessment = _assess(options, stats, cpu, processes, cores)
        if faults:
            assessment.warnings.extend(faults.warnings)
        info = report.RunInfo(
            target=target,
            procs=procs,
            worker_mode="processes" if processes else "thread",
            connections=sum(p.connections for p in plans),
            server_cores=options.server_cores if server else None,
            server_cpu_s=cpu.server,
            faults=faults.describe(clock) if faults and clock else None,
            clock=clock,
        )
        return report.build(options, info, stats, assessment)


def write_reports(options: Options, doc: dict[str, Any], stdout: TextIO) -> None:
    main_text = report.to_json(doc) if options.format == "json" else report.text(doc)
    if options.output is not None:
        options.output.write_text(main_text)
    else:
        stdout.write(main_text)
    if options.json_path is not None:
        options.json_path.write_text(report.to_json(doc))
    if options.html_path is not None:
        options.html_path.write_text(html_report.render(doc))


def run(options: Options, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run and report; the exit status (see the module docstring)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        doc = execute(options, err)
        write_reports(options, doc, out)
    except (RunError, spawn.SpawnError) as exc:
        print(f"paysim bench: {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"paysim bench: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("paysim bench: interrupted", file=err)
        return 130
    return 0


def run_from_args(args: argparse.Namespace) -> int:
    """The CLI's ``bench`` subcommand: check the options (exit 2 if bad), then run."""
    try:
        options = from_args(args)
    except OptionsError as exc:
        print(f"paysim bench: {exc}", file=sys.stderr)
        return 2
    return run(options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paysim bench")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
