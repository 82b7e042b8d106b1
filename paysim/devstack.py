"""``paysim dev``: the whole local stack in one command, no Docker, no AWS.

Starts, each inside the one before (so each outlives what depends on it):

1. moto's server (the ``moto[server]`` extra) as the AWS API, in a child
   process on 127.0.0.1, with throw-away credentials for that process tree
   only, and the CONTRACT §4 resources on it (bus, rule, queue, DLQ);
2. a webhook receiver (DevPorts.receiver, 8050) and a reservation-service
   stand-in (DevPorts.reservations, 8060) in this process
   (``paysim.dev_services``): they print what they receive;
3. the reservation worker (``paysim worker``) as its own process, reading the
   queue and PATCHing the stand-in;
4. the API server in this process (gRPC 8030, HTTP 8031), told where the
   worker is (RECONCILIATION_WORKER_URL, unless set): ``/reconciliation``
   then cross-checks what the worker did against the payments.

Then it prints how to call the API. Shutdown runs in the reverse order: the
first Ctrl-C (or SIGTERM) drains the API (its pending payments resolve and
announce), then the worker finishes its messages and deletes them, then the
emulator stops, so a normal Ctrl-C prints no error line. A second Ctrl-C stops
everything at once (children are killed). The children run in their own
sessions so that the terminal's Ctrl-C reaches this process only.

Every log line says which process wrote it (``process=api``, ``worker`` or
``dev``); the stand-ins' printed lines start with ``[receiver]`` and
``[reservations]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence

import structlog
import trio
from trio_util import move_on_when

from paysim import app, process
from paysim.adapters.aws import ensure_resources, make_client
from paysim.config import AwsSettings, Settings
from paysim.dev_services import ReservationStandIn, receiver_app
from paysim.entrypoints.http import HttpLimits, serve_http
from paysim.loadgen.ports import wait_port_open
from paysim.loadgen.spawn import free_port

__all__ = ["DEV_CREDENTIALS", "DevPorts", "receiver_app", "run_dev"]

log = structlog.get_logger("paysim.dev")
DEV = "dev"  # the process field of the dev stack's own lines (the API's say "api")

DEV_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "paysim-dev",
    "AWS_SECRET_ACCESS_KEY": "paysim-dev",  # moto accepts anything; never real keys
    "AWS_SESSION_TOKEN": "paysim-dev",
}
_EMULATOR_STOP_S = 5.0


@dataclasses.dataclass(frozen=True)
class DevPorts:
    """The ports of the stand-ins (the API's and the worker's are in Settings)."""

    receiver: int = 8050
    reservations: int = 8060


def _instructions(settings: Settings, ports: DevPorts) -> str:
    grpc = settings.grpc.port
    hook = f"http://127.0.0.1:{ports.receiver}/webhooks"
    return f"""
paysim dev stack is up:
  gRPC API          127.0.0.1:{grpc}   (reflection on: grpcurl -plaintext 127.0.0.1:{grpc} list)
  console           http://127.0.0.1:{settings.http.port}/console  (payments, timelines, actions)
  health, metrics   http://127.0.0.1:{settings.http.port}/health  /metrics
  webhook receiver  {hook}  (verifies signatures, prints deliveries)
  worker            paysim worker, health on :{settings.worker.http_port}
  reservations      http://127.0.0.1:{ports.reservations}/internal/reservations/  (prints PATCHes)

Try (then watch: webhook, worker, reservation CONFIRMED):
  grpcurl -plaintext -d '{{"reservation_id":"rsv_1","user_id":"user_1",
    "amount":{{"amount":100000,"currency":"KRW"}},"webhook_url":"{hook}"}}' \\
    127.0.0.1:{grpc} payment.v1.PaymentService/CreatePaymentIntent

Ctrl-C stops everything in order (a second Ctrl-C stops at once).
"""


async def _stop_child(proc: trio.Process, grace_s: float, force: trio.CancelScope) -> None:
    """SIGTERM ``proc`` and wait up to ``grace_s``; kill it at once when ``force``
    was cancelled (a second Ctrl-C) or the grace ran out. Shielded: it always ends."""
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            if force.cancel_called:
                proc.kill()
            else:
                proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(grace_s) as waited:
                    # a second Ctrl-C while waiting: stop waiting, kill
                    while not force.cancel_called and proc.returncode is None:
                        with trio.move_on_after(0.05):
                            await proc.wait()
                if waited.cancelled_caught or proc.returncode is None:
                    proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def _open_child(
    command: Sequence[str],
    env: dict[str, str],
    grace_s: float,
    force: trio.CancelScope,
    *,
    quiet: bool = False,
) -> AsyncIterator[trio.Process]:
    """A child process in its own session (our Ctrl-C is not its), stopped on exit;
    ``quiet``: its output is discarded."""
    output = subprocess.DEVNULL if quiet else None
    proc = await trio.lowlevel.open_process(
        list(command), env=env, stdout=output, stderr=output, start_new_session=True
    )
    try:
        yield proc
    finally:
        await _stop_child(proc, grace_s, force)


def _dev_environment(settings: Settings, endpoint: str) -> dict[str, str]:
    env = {
        **os.environ,
        **DEV_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": settings.aws.region,
        "AWS_DEFAULT_REGION": settings.aws.region,
    }
    env.pop("AWS_PROFILE", None)
    return env


async def run_dev(settings: Settings, ports: DevPorts | None = None) -> None:
    """Run the dev stack until a signal; see the module docstring for the order."""
    ports = ports if ports is not None else DevPorts()
    shutdown = trio.Event()
    with trio.CancelScope() as force:
        async with trio.open_nursery() as root:
            root.start_soon(process.watch_signals, shutdown, force)
            root.start_soon(_say_how_it_stops, shutdown)
            await _run_stack(settings, ports, shutdown, force)
            root.cancel_scope.cancel()


async def _say_how_it_stops(shutdown: trio.Event) -> None:
    await shutdown.wait()
    print(
        "\nstopping in order: the API drains, the worker finishes, then the AWS emulator "
        "(Ctrl-C again to stop at once)\n",
        flush=True,
    )


async def _run_stack(
    settings: Settings, ports: DevPorts, shutdown: trio.Event, force: trio.CancelScope
) -> None:
    moto_port = free_port()
    endpoint = f"http://127.0.0.1:{moto_port}"
    env = _dev_environment(settings, endpoint)
    # This process is the dev stack and nothing else: its own boto3 clients use
    # the same throw-away credentials as its children (moto ignores them).
    os.environ.update(DEV_CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
    aws: AwsSettings = dataclasses.replace(settings.aws, profile=None)
    # The console's "create a test payment" form sends its webhooks to this receiver.
    console = dataclasses.replace(
        settings.console, default_webhook_url=f"http://127.0.0.1:{ports.receiver}/webhooks"
    )
    # The API's /reconciliation reads what the worker it runs did (unless told otherwise).
    chaos = settings.api_chaos
    if chaos.worker.url is None:
        worker = dataclasses.replace(
            chaos.worker, url=f"http://127.0.0.1:{settings.worker.http_port}"
        )
        chaos = dataclasses.replace(chaos, worker=worker)
    settings = dataclasses.replace(settings, aws=aws, console=console, api_chaos=chaos)
    moto_command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)]
    async with _open_child(moto_command, env, _EMULATOR_STOP_S, force, quiet=True):
        with trio.move_on_after(30) as waiting:
            async with move_on_when(shutdown.wait):
                await wait_port_open(moto_port)
        if waiting.cancelled_caught or shutdown.is_set():
            return
        events = await trio.to_thread.run_sync(make_client, "events", aws, endpoint)
        sqs = await trio.to_thread.run_sync(make_client, "sqs", aws, endpoint)
        resources = await ensure_resources(events, sqs, aws)
        log.info(
            "aws emulator ready", endpoint=endpoint, queue_url=resources.queue_url, process=DEV
        )
        async with trio.open_nursery() as stand_ins:
            await stand_ins.start(
                serve_http,
                "127.0.0.1",
                ports.receiver,
                receiver_app(settings.webhook.secrets),
                HttpLimits(),
            )
            await stand_ins.start(
                serve_http, "127.0.0.1", ports.reservations, ReservationStandIn(), HttpLimits()
            )
            worker_env = {
                **env,
                "PAYMENT_WEBHOOK_QUEUE_URL": resources.queue_url,
                "RESERVATION_API_URL": f"http://127.0.0.1:{ports.reservations}",
                "WORKER_HTTP_PORT": str(settings.worker.http_port),
            }
            worker_command = [sys.executable, "-m", "paysim", "worker"]
            async with _open_child(
                worker_command, worker_env, settings.shutdown_grace_s + 5, force
            ):
                await app.run(
                    settings,
                    shutdown=shutdown,
                    events_client=events,
                    on_serving=lambda: print(_instructions(settings, ports), flush=True),
                )
                log.info("api stopped; stopping the worker", process=DEV)
            log.info("worker stopped; stopping the aws emulator", process=DEV)
            stand_ins.cancel_scope.cancel()
    log.info("dev stack stopped", process=DEV)
