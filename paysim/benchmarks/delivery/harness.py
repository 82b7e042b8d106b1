"""One benchmark run: start the processes, drive the load, wait for the drain, collect.

``bench`` owns every process it starts (``processes`` stops them however the
run ends) and the gRPC channels; what it collected comes back as an
``Outcome`` for ``report.build_report``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paysim.benchmarks.delivery.constants import (
    BENCH_CREDENTIALS,
    BUS_NAME,
    EVENT_SOURCE,
    INTENT_TTL_MS,
    OTHER_CORE,
    RECEIVER_PATH,
    REGION,
    SECRET,
    SERVER_CORE,
)
from paysim.benchmarks.delivery.load import Load, generate
from paysim.benchmarks.delivery.processes import processes, spawn, stop
from paysim.benchmarks.delivery.receiver import Record, read_records, receiver_stats
from paysim.benchmarks.delivery.sampling import Sample, Sampler
from paysim.config import AwsSettings
from paysim.loadgen.ports import wait_port
from paysim.loadgen.spawn import free_port


def _queue_count(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def _wait_until(predicate: Callable[[], bool], deadline: float, period: float = 0.5) -> bool:
    for _ in range(1_000_000):  # bounded by the deadline long before
        try:
            if predicate():
                return True
        except Exception:  # a failed poll (receiver or moto busy): try again
            pass
        if time.time() >= deadline:
            return False
        time.sleep(period)
    return False


@dataclass
class Outcome:
    """What ``bench`` collected, for ``_report``."""

    load: Load
    wall0: float
    records: list[Record]
    sampler: Sampler
    before: Sample
    after: Sample
    sqs_messages: int
    dlq_messages: int
    receiver_stats: dict[str, int]
    drained: bool
    drain_s: float


def server_command(args: argparse.Namespace) -> list[str]:
    """``python -m paysim serve``, under cProfile or cachegrind if asked (both write
    their file when the server exits)."""
    serve = [sys.executable, "-m", "paysim", "serve"]
    if args.profile_server:
        serve[1:1] = ["-m", "cProfile", "-o", str(args.profile_server.resolve())]
    if args.count_instructions:
        out = f"--cachegrind-out-file={args.count_instructions.resolve()}"
        serve[:0] = ["valgrind", "--tool=cachegrind", "--cache-sim=no", out]
    return serve


def bench(args: argparse.Namespace, workdir: Path) -> Outcome:
    import grpc
    import trio

    from paysim._proto.proto.payment.v1 import payment_pb2_grpc
    from paysim.adapters.aws import ensure_resources, make_client

    os.sched_setaffinity(0, {int(OTHER_CORE)})  # threads started from now on inherit it
    os.environ.update(BENCH_CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
    aws = AwsSettings(region=REGION, event_bus_name=BUS_NAME, event_source=EVENT_SOURCE)
    delay_s = args.delay_ms / 1000.0
    receiver_port, grpc_port, http_port = free_port(), free_port(), free_port()
    env = {**os.environ, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
    with processes() as procs:
        pids: dict[str, int] = {}
        sqs: Any = None
        queue_url = dlq_url = ""
        if args.events == "moto":
            moto_port = free_port()
            endpoint = f"http://127.0.0.1:{moto_port}"
            moto_cmd = [
                sys.executable,
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                str(moto_port),
            ]
            # Niced: moto cannot keep up with 1,000 events/s (see the module docstring);
            # on core 1 it must not starve the load generator and the receiver.
            procs.append(moto := spawn(OTHER_CORE, moto_cmd, env, nice=True))
            pids["moto"] = moto.pid
            wait_port(moto_port, 30)
            events = make_client("events", aws, endpoint)
            sqs = make_client("sqs", aws, endpoint)
            resources = trio.run(ensure_resources, events, sqs, aws)
            queue_url, dlq_url = resources.queue_url, resources.dlq_url
        else:
            endpoint = f"http://127.0.0.1:{receiver_port}"  # the receiver answers PutEvents

        outfile = workdir / "records.tsv"
        receiver_cmd = [sys.executable, "-m", "paysim.benchmarks.delivery", "--receiver"]
        receiver_cmd += [str(receiver_port), str(outfile)]
        procs.append(receiver := spawn(OTHER_CORE, receiver_cmd, env))
        pids["receiver"] = receiver.pid

        server_env = {
            **env,
            "ENVIRONMENT": "production",
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(grpc_port),
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(http_port),
            "AWS_ENDPOINT_URL": endpoint,
            "EVENT_BUS_NAME": BUS_NAME,
            "PAYMENT_EVENT_SOURCE": EVENT_SOURCE,
            "DEFAULT_DELAY_MS": str(args.delay_ms),
            "INTENT_TTL_MS": str(INTENT_TTL_MS),
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",  # production refuses loopback otherwise
            "SHUTDOWN_GRACE_MS": "5000",
        }
        if args.webhook_concurrency is not None:
            server_env["WEBHOOK_CONCURRENCY"] = str(args.webhook_concurrency)
        procs.append(server := spawn(SERVER_CORE, server_command(args), server_env))
        pids["server"] = server.pid
        for port in (receiver_port, grpc_port, http_port):
            wait_port(port, 120 if args.count_instructions else 30)  # valgrind starts slowly

        def webhooks_in(n: int) -> bool:
            return receiver_stats(receiver_port)["webhooks_unique"] >= n

        def events_in(n: int) -> bool:
            if args.events == "moto":
                return _queue_count(sqs, queue_url) >= n
            return receiver_stats(receiver_port)["events_unique"] >= n

        options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
        channels = [
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=options)
            for _ in range(args.channels)
        ]
        try:
            for channel in channels:
                grpc.channel_ready_future(channel).result(timeout=10)
            stubs = [payment_pb2_grpc.PaymentServiceStub(c) for c in channels]
            url = f"http://127.0.0.1:{receiver_port}{RECEIVER_PATH}"
            with Sampler(pids, http_port) as sampler:
                before = sampler.sample()
                run_id = f"{os.getpid()}_{int(time.time())}"
                load, wall0 = generate(stubs, url, args.rate, args.duration, delay_s, run_id)
                ok = sum(1 for p in load.payment_ids if p)
                drain_start = time.time()
                deadline = max(drain_start, wall0 + args.duration + delay_s) + args.drain_timeout
                drained = _wait_until(lambda: webhooks_in(ok), deadline)
                drained = _wait_until(lambda: events_in(ok), deadline) and drained
                drain_s = time.time() - drain_start
                after = sampler.sample()
        finally:
            for channel in channels:
                channel.close()
        sqs_messages = _queue_count(sqs, queue_url) if sqs is not None else 0
        dlq_messages = _queue_count(sqs, dlq_url) if sqs is not None else 0
        stats = receiver_stats(receiver_port)
        stop(receiver)
        records = read_records(outfile)

    return Outcome(
        load=load,
        wall0=wall0,
        records=records,
        sampler=sampler,
        before=before,
        after=after,
        sqs_messages=sqs_messages,
        dlq_messages=dlq_messages,
        receiver_stats=stats,
        drained=drained,
        drain_s=drain_s,
    )
