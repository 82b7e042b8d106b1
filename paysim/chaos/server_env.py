"""The environment of the ``paysim serve`` a chaos run starts, and why each setting.

WEBHOOK_RETRY_SCHEDULE=default scaled by the time scale (10 ms doubling up to
3 s at 0.01) with WEBHOOK_MAX_ATTEMPTS 40, so a receiver that is down for
seconds is outlasted, never given up on; WEBHOOK_TIMEOUT_MS from the options
(the receiver's "timeout" answers take 300 ms more); WEBHOOK_CONCURRENCY 32,
because timed-out attempts hold a sender each; SHUTDOWN_GRACE_MS 8000 (see
the constant); DRAIN_DELAY_MS 200 (no load balancer to wait for);
INTENT_TTL_MS 600000 (TIMEOUT payments expire 6 s after creation). Every
CHAOS_*, WEBHOOK_*, EVENTS_*, SIMULATION_* and AWS_ENDPOINT* variable of the
caller's shell is dropped: the run decides these.
"""

from __future__ import annotations

from paysim.chaos.options import Options
from paysim.chaos.scenarios import DEFAULT_DELAY_MS, DELAY_SCENARIO_MS, INTENT_TTL_MS, MAX_DELAY_MS
from paysim.chaos.stack import aws_env
from paysim.config import AwsSettings

REGION = "us-east-1"
REORDER_HOLD_MS = 5_000  # simulated; 50 ms at the default time scale
# Payments due within half the grace resolve on time, the rest early: with TIMEOUT
# payments pending for up to 6 s at SIGTERM, both happen; 4 s remain to flush.
SHUTDOWN_GRACE_MS = 8_000


def server_env(
    options: Options, secret: str, aws: AwsSettings, events_endpoint: str
) -> dict[str, str]:
    """The server's environment: the caller's, minus what the run decides, plus the run's."""
    f = options.faults
    env = aws_env(REGION)
    for name in list(env):
        if name.startswith(("CHAOS_", "WEBHOOK_", "EVENTS_", "SIMULATION_", "AWS_ENDPOINT")):
            del env[name]  # the run decides these, not the caller's shell
    env.update(
        ENVIRONMENT="development",
        LOG_FORMAT="json",
        LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
        GRPC_HOST="127.0.0.1",
        GRPC_PORT="0",
        HTTP_HOST="127.0.0.1",
        HTTP_PORT="0",
        SIMULATION_TIME_SCALE=repr(options.time_scale),
        SIMULATION_SEED=str(options.seed),
        RANDOM_APPROVE_RATE=repr(options.random_approve_rate),
        WEBHOOK_SECRET=secret,
        WEBHOOK_RETRY_SCHEDULE="default",
        WEBHOOK_MAX_ATTEMPTS="40",
        WEBHOOK_TIMEOUT_MS=str(options.webhook_timeout_ms),
        WEBHOOK_CONCURRENCY="32",
        CHAOS_WEBHOOK_DUPLICATE_RATE=repr(f.duplicate_rate),
        CHAOS_WEBHOOK_REORDER_RATE=repr(f.reorder_rate),
        CHAOS_WEBHOOK_REORDER_HOLD_MS=str(REORDER_HOLD_MS),
        CHAOS_SEED=str(options.seed),
        EVENTS_ENABLED="true",
        EVENTS_CALL_TIMEOUT_MS="2000",
        # botocore's per-service variable is named after the service id, "EventBridge".
        AWS_ENDPOINT_URL_EVENTBRIDGE=events_endpoint,
        EVENT_BUS_NAME=aws.event_bus_name,
        PAYMENT_EVENT_SOURCE=aws.event_source,
        DEFAULT_DELAY_MS=str(DEFAULT_DELAY_MS),
        DELAY_SCENARIO_MS=str(DELAY_SCENARIO_MS),
        INTENT_TTL_MS=str(INTENT_TTL_MS),
        MAX_DELAY_MS=str(MAX_DELAY_MS),
        SHUTDOWN_GRACE_MS=str(SHUTDOWN_GRACE_MS),
        DRAIN_DELAY_MS="200",
    )
    return env
