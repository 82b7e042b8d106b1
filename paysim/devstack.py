"""``paysim dev``: the whole local stack in one command, no Docker, no AWS.

Starts, in one root nursery:

1. moto's server (the ``moto[server]`` extra) as the AWS API, in a child
   process on 127.0.0.1, with throw-away credentials for that process tree only;
2. the CONTRACT §4 resources on it (bus, rule, queue, DLQ);
3. a webhook receiver on 127.0.0.1:DEV_RECEIVER_PORT (8050) that verifies each
   delivery's signature with ``paysim.webhooks.verify`` and prints one line;
4. the reservation worker (``paysim worker``) as its own process, reading the
   queue (no RESERVATION_API_URL: it logs its decisions);
5. the API server in this process (gRPC 8030, HTTP 8031).

Then it prints how to call the API. Ctrl-C (or SIGTERM) stops the API
gracefully, then the worker and moto; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from typing import Any

import structlog
import trio

from paysim import app
from paysim.adapters.aws import ensure_resources, make_client
from paysim.config import AwsSettings, Settings
from paysim.entrypoints.http import (
    HttpApp,
    HttpLimits,
    HttpRequest,
    HttpResponse,
    json_response,
    serve_http,
)
from paysim.loadgen.ports import wait_port_open
from paysim.loadgen.spawn import free_port
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics
from paysim.webhooks import WebhookVerificationError, verify

log = structlog.get_logger("paysim.dev")

DEV_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "paysim-dev",
    "AWS_SECRET_ACCESS_KEY": "paysim-dev",  # moto accepts anything; never real keys
    "AWS_SESSION_TOKEN": "paysim-dev",
}


def receiver_app(secrets: tuple[str, ...], out: Any = None) -> HttpApp:
    """A webhook receiver that verifies and prints every delivery."""
    out = out if out is not None else sys.stdout
    receiver = HttpApp(Readiness(), Metrics(), service_name="paysim-dev-receiver")

    async def deliver(request: HttpRequest) -> HttpResponse:
        headers = [(k.decode(), v.decode()) for k, v in request.headers]
        try:
            verified = verify(request.body, headers, secrets)
        except WebhookVerificationError as exc:
            print(f"webhook REJECTED: {exc}", file=out, flush=True)
            return json_response(400, {"error": str(exc)})
        print(
            f"webhook ok ({verified.style}, id={verified.webhook_id}): "
            f"{request.body.decode(errors='replace')}",
            file=out,
            flush=True,
        )
        return json_response(200, {"received": True})

    receiver.add_route("/webhooks", frozenset({"POST"}), deliver)
    return receiver


def _instructions(settings: Settings, receiver_port: int) -> str:
    grpc = settings.grpc.port
    hook = f"http://127.0.0.1:{receiver_port}/webhooks"
    return f"""
paysim dev stack is up:
  gRPC API          127.0.0.1:{grpc}   (reflection on: grpcurl -plaintext 127.0.0.1:{grpc} list)
  health, metrics   http://127.0.0.1:{settings.http.port}/health  /metrics
  webhook receiver  {hook}  (verifies signatures, prints deliveries)
  worker            paysim worker, health on :{settings.worker.http_port}

Try:
  grpcurl -plaintext -d '{{"reservation_id":"rsv_1","user_id":"user_1",
    "amount":{{"amount":100000,"currency":"KRW"}},"webhook_url":"{hook}"}}' \\
    127.0.0.1:{grpc} payment.v1.PaymentService/CreatePaymentIntent

Ctrl-C stops everything.
"""


async def run_dev(settings: Settings, receiver_port: int = 8050) -> None:
    moto_port = free_port()
    endpoint = f"http://127.0.0.1:{moto_port}"
    env = {
        **os.environ,
        **DEV_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": settings.aws.region,
        "AWS_DEFAULT_REGION": settings.aws.region,
    }
    env.pop("AWS_PROFILE", None)
    # This process is the dev stack and nothing else: its own boto3 clients use
    # the same throw-away credentials as its children (moto ignores them).
    os.environ.update(DEV_CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
    aws: AwsSettings = dataclasses.replace(settings.aws, profile=None)
    settings = dataclasses.replace(settings, aws=aws)
    moto = await trio.lowlevel.open_process(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # our Ctrl-C must not kill it before the API drains
    )
    worker: trio.Process | None = None
    try:
        await wait_port_open(moto_port)
        events = await trio.to_thread.run_sync(make_client, "events", aws, endpoint)
        sqs = await trio.to_thread.run_sync(make_client, "sqs", aws, endpoint)
        resources = await ensure_resources(events, sqs, aws)
        log.info("aws emulator ready", endpoint=endpoint, queue_url=resources.queue_url)
        worker = await trio.lowlevel.open_process(
            [sys.executable, "-m", "paysim", "worker"],
            env={**env, "PAYMENT_WEBHOOK_QUEUE_URL": resources.queue_url},
            start_new_session=True,
        )
        async with trio.open_nursery() as nursery:

            async def api(*, task_status: trio.TaskStatus[app.Running]) -> None:
                await app.run(settings, events_client=events, task_status=task_status)
                # app.run returns after its graceful shutdown (Ctrl-C): stop the rest.
                nursery.cancel_scope.cancel()

            await nursery.start(
                serve_http,
                "127.0.0.1",
                receiver_port,
                receiver_app(settings.webhook.secrets),
                HttpLimits(),
            )
            await nursery.start(api)
            print(_instructions(settings, receiver_port), flush=True)
    finally:
        with trio.CancelScope(shield=True):
            for proc in (worker, moto):
                if proc is not None and proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in (worker, moto):
                if proc is not None:
                    with trio.move_on_after(settings.shutdown_grace_s + 5):
                        await proc.wait()
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
