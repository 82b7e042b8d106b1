"""boto3 clients and the AWS resources of CONTRACT §4, for paysim's adapters.

* ``make_client(service, aws)`` builds a boto3 client from a fresh
  ``boto3.session.Session(profile_name=aws.profile, region_name=aws.region)``.
  Credentials come from boto3's default chain only (environment, profile, IRSA
  web identity, instance metadata): nothing here names a key. The endpoint is
  boto3's own business too: with ``endpoint_url=None`` boto3 honours
  ``AWS_ENDPOINT_URL`` and the per-service ``AWS_ENDPOINT_URL_EVENTS`` (the
  contract's name, honoured by ``make_client``: botocore reads only
  ``AWS_ENDPOINT_URL_EVENTBRIDGE``) / ``AWS_ENDPOINT_URL_SQS``; tests and
  ``paysim dev`` pass moto's URL directly.
  Building a client reads botocore's JSON service models (tens of milliseconds,
  synchronous): do it at startup, or through ``trio.to_thread.run_sync``.
  The caller owns the client; boto3 clients are thread-safe, so one client may
  serve every worker thread, and there is nothing to close.
* ``await ensure_resources(events, sqs, aws)`` creates, idempotently, the event
  bus, the DLQ, the queue (its redrive policy and the CONTRACT attributes), the
  rule, its SQS target and the queue policy that lets that rule send to the
  queue, and returns their names, ARNs and URLs as ``Resources``. It converges
  existing resources to the contract (queue attributes, rule pattern, target,
  policy) rather than failing on them. Used by tests and ``paysim dev``; in the
  field these resources belong to infrastructure code.

Policy decisions:

* **botocore does not retry** (``retries={"mode": "standard",
  "total_max_attempts": 1}``). Callers retry with their own backoff under their
  own trio deadline; botocore's retries would sleep inside a worker thread,
  invisible to that deadline, and multiply with ours (3 x N attempts). A caller
  that has no retry loop of its own (a one-shot setup) can pass
  ``ClientTuning(max_attempts=3)``.
* **Timeouts are short and per service**: connect 3 s; read 10 s, except SQS,
  whose read timeout (30 s) must outlast a 20 s long poll. Callers with a
  tighter budget pass ``ClientTuning(read_timeout_s=...)`` (the EventBridge
  publisher's deadline is EVENTS_CALL_TIMEOUT_MS). These timeouts are what really ends a blocked
  thread: a trio deadline can only abandon it.
* **Every blocking call of ``ensure_resources`` runs through
  ``trio.to_thread.run_sync``** behind a ``CapacityLimiter`` and under
  ``trio.fail_after(call_timeout_s)``, like every other boto3 call in paysim.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

import boto3.session
import botocore.session
import trio
from botocore.config import Config
from botocore.exceptions import ClientError

from paysim.adapters import aws_http
from paysim.config import AwsSettings
from paysim.domain.events import DETAIL_TYPE

if TYPE_CHECKING:  # boto3-stubs is a development dependency only
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient

T = TypeVar("T")

QUEUE_NAME = "traffic-tacos-payment-webhooks"
DLQ_NAME = "traffic-tacos-payment-webhooks-dlq"
RULE_NAME = "payment-sim-status-updated"
TARGET_ID = "payment-webhooks-queue"

VISIBILITY_TIMEOUT_S = 30
RETENTION_S = 14 * 24 * 3600  # 1,209,600 s: 14 days, SQS's maximum
LONG_POLL_S = 20
MAX_RECEIVE_COUNT = 3

CONNECT_TIMEOUT_S = 3.0
_READ_TIMEOUT_S = {"sqs": 30.0}  # above a 20 s long poll
DEFAULT_READ_TIMEOUT_S = 10.0

_QUEUE_MISSING = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_QUEUE_EXISTS = frozenset({"QueueAlreadyExists", "QueueNameExists"})


class AwsSetupError(Exception):
    """``ensure_resources`` could not bring a resource to the contract's shape."""


@dataclass(frozen=True, slots=True)
class ClientTuning:
    """How a boto3 client times out, retries and pools (see the module docstring).

    ``read_timeout_s=None`` picks the service's default. ``max_attempts`` counts
    the first call: 1 means botocore never retries. ``max_pool_connections``
    bounds the HTTP connections, so it should be at least the number of threads
    that call the client at once.
    """

    connect_timeout_s: float = CONNECT_TIMEOUT_S
    read_timeout_s: float | None = None
    max_attempts: int = 1
    max_pool_connections: int = 10
    # Send through ``aws_http.LeanSender`` instead of urllib3 (where it can: see there).
    lean_http: bool = False


DEFAULT_TUNING = ClientTuning()


@dataclass(frozen=True, slots=True)
class ResourceNames:
    """The names ``ensure_resources`` gives the queue, its DLQ and the rule."""

    queue: str = QUEUE_NAME
    dlq: str = DLQ_NAME
    rule: str = RULE_NAME


DEFAULT_NAMES = ResourceNames()


@overload
def make_client(
    service: Literal["events"],
    aws: AwsSettings,
    endpoint_url: str | None = None,
    *,
    tuning: ClientTuning = ...,
) -> EventBridgeClient: ...


@overload
def make_client(
    service: Literal["sqs"],
    aws: AwsSettings,
    endpoint_url: str | None = None,
    *,
    tuning: ClientTuning = ...,
) -> SQSClient: ...


@overload
def make_client(
    service: str,
    aws: AwsSettings,
    endpoint_url: str | None = None,
    *,
    tuning: ClientTuning = ...,
) -> Any: ...


def make_client(
    service: str,
    aws: AwsSettings,
    endpoint_url: str | None = None,
    *,
    tuning: ClientTuning = DEFAULT_TUNING,
) -> Any:
    """A boto3 client for ``service`` in ``aws.region`` (profile ``aws.profile``).

    ``endpoint_url=None`` leaves the endpoint to boto3 (AWS, or
    ``AWS_ENDPOINT_URL[_<SERVICE>]``). ``tuning`` holds the client's timeouts,
    retries and pool size, and whether its HTTP goes through ``aws_http``
    (``ClientTuning``).
    """
    read_timeout = (
        tuning.read_timeout_s
        if tuning.read_timeout_s is not None
        else _READ_TIMEOUT_S.get(service, DEFAULT_READ_TIMEOUT_S)
    )
    config = Config(
        connect_timeout=tuning.connect_timeout_s,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": tuning.max_attempts},
        max_pool_connections=tuning.max_pool_connections,
        # paysim builds every request itself (the contract's entries, sizes
        # checked at notify) and AWS validates anyway: botocore's client-side
        # check is about 5 % of a PutEvents call's CPU, on the GIL (issue 18).
        parameter_validation=False,
    )
    if endpoint_url is None:
        endpoint_url = contract_endpoint(service, os.environ)
    core = botocore.session.get_session()
    session = boto3.session.Session(
        botocore_session=core, profile_name=aws.profile, region_name=aws.region
    )
    client = session.client(cast(Any, service), endpoint_url=endpoint_url, config=config)
    if tuning.lean_http:
        aws_http.install(client, cafile=core.get_config_variable("ca_bundle"))
    return client


def contract_endpoint(service: str, env: Mapping[str, str]) -> str | None:
    """``AWS_ENDPOINT_URL_EVENTS`` for EventBridge, which botocore itself ignores.

    CONTRACT §4 names that variable, but botocore derives the per-service
    name from the service id ("EventBridge"): it reads only
    ``AWS_ENDPOINT_URL_EVENTBRIDGE``. The contract's name is honoured here
    unless botocore's own one (or none: boto3 decides) applies.
    """
    if service != "events" or env.get("AWS_ENDPOINT_URL_EVENTBRIDGE"):
        return None
    return env.get("AWS_ENDPOINT_URL_EVENTS") or None


@dataclass(frozen=True, slots=True)
class Resources:
    """What ``ensure_resources`` created or found."""

    bus_name: str
    bus_arn: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    rule_name: str
    rule_arn: str


def event_pattern(aws: AwsSettings) -> dict[str, list[str]]:
    """The rule's pattern: paysim's source and the contract's detail-type."""
    return {"source": [aws.event_source], "detail-type": [DETAIL_TYPE]}


def queue_policy(queue_arn: str, rule_arn: str) -> dict[str, Any]:
    """Allow EventBridge to send to ``queue_arn``, on behalf of ``rule_arn`` only."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowPaymentStatusRule",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _Caller:
    """Runs blocking boto3 calls in worker threads, one deadline per call."""

    def __init__(self, limiter: trio.CapacityLimiter, timeout_s: float) -> None:
        self._limiter = limiter
        self._timeout_s = timeout_s

    async def __call__(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        with trio.fail_after(self._timeout_s):
            return await trio.to_thread.run_sync(
                partial(fn, **kwargs), limiter=self._limiter, abandon_on_cancel=True
            )


async def ensure_resources(
    events_client: EventBridgeClient,
    sqs_client: SQSClient,
    aws: AwsSettings,
    *,
    names: ResourceNames = DEFAULT_NAMES,
    limiter: trio.CapacityLimiter | None = None,
    call_timeout_s: float = 10.0,
) -> Resources:
    """Create (or bring to shape) the bus, DLQ, queue, rule, target and queue policy.

    Idempotent: run it at every start. The bus is ``aws.event_bus_name`` (the
    account's ``default`` bus is used, never created); the rule matches
    ``aws.event_source`` and the ``Payment Status Updated`` detail-type. The
    queue policy is replaced by ours (this function owns it). Raises
    ``ClientError``/``BotoCoreError`` from boto3, ``trio.TooSlowError`` when a
    call exceeds ``call_timeout_s``, ``AwsSetupError`` when the target is refused.
    """
    call = _Caller(limiter or trio.CapacityLimiter(1), call_timeout_s)
    bus_name = aws.event_bus_name
    queue_name, dlq_name, rule_name = names.queue, names.dlq, names.rule

    if bus_name != "default":
        try:
            await call(events_client.create_event_bus, Name=bus_name)
        except ClientError as exc:
            if _error_code(exc) != "ResourceAlreadyExistsException":
                raise
    bus = await call(events_client.describe_event_bus, Name=bus_name)

    dlq_url, dlq_arn = await _ensure_queue(
        call, sqs_client, dlq_name, {"MessageRetentionPeriod": str(RETENTION_S)}
    )
    queue_attributes = {
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT_S),
        "MessageRetentionPeriod": str(RETENTION_S),
        "ReceiveMessageWaitTimeSeconds": str(LONG_POLL_S),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
        ),
    }
    queue_url, queue_arn = await _ensure_queue(call, sqs_client, queue_name, queue_attributes)

    rule = await call(
        events_client.put_rule,
        Name=rule_name,
        EventBusName=bus_name,
        EventPattern=json.dumps(event_pattern(aws)),
        State="ENABLED",
        Description="paysim payment status changes to the payment webhooks queue",
    )
    rule_arn = rule["RuleArn"]
    # The policy goes first, so that the first event routed by the target is allowed in.
    await call(
        sqs_client.set_queue_attributes,
        QueueUrl=queue_url,
        Attributes={"Policy": json.dumps(queue_policy(queue_arn, rule_arn))},
    )
    targets = await call(
        events_client.put_targets,
        Rule=rule_name,
        EventBusName=bus_name,
        Targets=[{"Id": TARGET_ID, "Arn": queue_arn}],
    )
    if targets.get("FailedEntryCount", 0):
        raise AwsSetupError(f"rule {rule_name}: target refused: {targets.get('FailedEntries')}")

    return Resources(
        bus_name=bus_name,
        bus_arn=bus["Arn"],
        queue_url=queue_url,
        queue_arn=queue_arn,
        dlq_url=dlq_url,
        dlq_arn=dlq_arn,
        rule_name=rule_name,
        rule_arn=rule_arn,
    )


async def _ensure_queue(
    call: _Caller, sqs: SQSClient, name: str, attributes: dict[str, str]
) -> tuple[str, str]:
    """The queue's URL and ARN; created with ``attributes``, or set to them if it exists."""
    try:
        url = (await call(sqs.get_queue_url, QueueName=name))["QueueUrl"]
    except ClientError as exc:
        if _error_code(exc) not in _QUEUE_MISSING:
            raise
        try:
            url = (await call(sqs.create_queue, QueueName=name, Attributes=attributes))["QueueUrl"]
        except ClientError as exc2:  # created meanwhile, with other attributes
            if _error_code(exc2) not in _QUEUE_EXISTS:
                raise
            url = (await call(sqs.get_queue_url, QueueName=name))["QueueUrl"]
    await call(sqs.set_queue_attributes, QueueUrl=url, Attributes=attributes)
    got = await call(sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"])
    return url, got["Attributes"]["QueueArn"]
