"""moto's server as AWS on loopback, for integration tests of the EventBridge and SQS paths.

Use it from a test module with::

    pytest_plugins = ["tests.moto_fixtures"]

(or import the fixtures by name). What it provides:

* ``moto_url`` (session): ``http://127.0.0.1:<port>`` of one ``ThreadedMotoServer``
  started on a free port the first time a test asks for it (it takes a moment
  to start) and stopped at the end of the session.
* ``aws_env`` (function): fake credentials for this process through
  ``monkeypatch`` (``AWS_ACCESS_KEY_ID=testing`` ...; never real ones), region
  us-east-1, no profile, no shared config/credentials files, and
  ``AWS_ENDPOINT_URL`` pointing at moto, so a client built with no explicit
  endpoint (as the app builds its own) reaches moto too.
* ``aws_names`` (function): unique resource names for this test (bus, source,
  queue, DLQ, rule).
* ``aws_settings`` (function): ``AwsSettings`` for us-east-1 with this test's
  bus name and event source.
* ``events_client`` / ``sqs_client`` (function): boto3 clients made by
  ``paysim.adapters.aws.make_client(..., endpoint_url=moto_url)``.
* ``aws_resources`` (async, function): ``ensure_resources`` run for this test's
  names; a ``Resources`` (queue and DLQ URLs, ARNs). For settings that name the
  queue: ``dataclasses.replace(aws_settings, webhook_queue_url=r.queue_url,
  webhook_dlq_url=r.dlq_url)``.

Isolation: by unique names, not by resetting moto. Every test gets its own bus,
event source, queue, DLQ and rule (a short random suffix), so tests never see
each other's resources or messages, and nothing global is wiped under a test
that is still using the server. moto's memory grows by a few queues per test,
which is nothing at this scale. ``reset_moto(url)`` is there for a test that
really needs an empty account (it affects every test sharing the server).

boto3 calls block: in trio tests run them through ``trio.to_thread.run_sync``
(the adapters do), and do not combine real worker threads with
``autojump_clock`` (the mock clock jumps forward while a thread runs).
"""

from __future__ import annotations

import dataclasses
import urllib.request
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from paysim.adapters.aws import ResourceNames, Resources, ensure_resources, make_client
from paysim.config import AwsSettings

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account


@dataclasses.dataclass(frozen=True)
class AwsNames:
    """Resource names unique to one test."""

    bus: str
    source: str
    queue: str
    dlq: str
    rule: str


def reset_moto(url: str) -> None:
    """Forget every resource in the moto server at ``url`` (all tests sharing it)."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(
    moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> str:
    missing = tmp_path_factory.getbasetemp() / "no-aws-config"
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL_EVENTS",
        "AWS_ENDPOINT_URL_SQS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(missing))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return moto_url


@pytest.fixture
def aws_names() -> AwsNames:
    suffix = uuid.uuid4().hex[:10]
    return AwsNames(
        bus=f"ticket-reservation-events-{suffix}",
        source=f"payment-sim-api-{suffix}",
        queue=f"traffic-tacos-payment-webhooks-{suffix}",
        dlq=f"traffic-tacos-payment-webhooks-dlq-{suffix}",
        rule=f"payment-sim-status-updated-{suffix}",
    )


@pytest.fixture
def aws_settings(aws_env: str, aws_names: AwsNames) -> AwsSettings:
    return AwsSettings(region=REGION, event_bus_name=aws_names.bus, event_source=aws_names.source)


@pytest.fixture
def events_client(aws_settings: AwsSettings, moto_url: str) -> EventBridgeClient:
    return make_client("events", aws_settings, endpoint_url=moto_url)


@pytest.fixture
def sqs_client(aws_settings: AwsSettings, moto_url: str) -> SQSClient:
    return make_client("sqs", aws_settings, endpoint_url=moto_url)


@pytest.fixture
async def aws_resources(
    events_client: EventBridgeClient,
    sqs_client: SQSClient,
    aws_settings: AwsSettings,
    aws_names: AwsNames,
) -> Resources:
    return await ensure_resources(
        events_client,
        sqs_client,
        aws_settings,
        names=ResourceNames(queue=aws_names.queue, dlq=aws_names.dlq, rule=aws_names.rule),
    )
