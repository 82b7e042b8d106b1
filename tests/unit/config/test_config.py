"""Settings.from_env: CONTRACT defaults, every variable parsed, bad values named."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from paysim.config import ConfigError, Environment, Settings

ROOT = Path(__file__).resolve().parents[3]

DAY_MS = 86_400_000


def test_defaults_are_the_contract_values() -> None:
    s = Settings.from_env({})
    assert s.environment is Environment.DEVELOPMENT
    assert s.grpc.port == 8030
    assert s.grpc.host == ""
    assert s.http.port == 8031
    assert s.simulation.default_delay_s == 2.0
    assert s.simulation.delay_scenario_s == 10.0
    assert s.simulation.default_scenario == "approve"
    assert s.simulation.random_approve_rate == 0.7
    assert s.simulation.seed is None
    assert s.simulation.intent_ttl_s == 900.0
    assert s.simulation.idempotency_ttl_s >= 24 * 3600
    assert s.webhook.secret == "payment-sim-dev-secret"
    assert s.aws.event_bus_name == "ticket-reservation-events"
    assert s.aws.event_source == "payment-sim-api"
    assert s.aws.region == "ap-northeast-2"
    assert s.aws.profile is None
    assert s.aws.webhook_queue_url is None
    assert s.aws.webhook_dlq_url is None
    assert s.log.level == "info"
    assert s.log.json is False


def test_from_env_of_nothing_equals_the_dataclass_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def _get(path: str) -> Callable[[Settings], Any]:
    def read(s: Settings) -> Any:
        value: Any = s
        for part in path.split("."):
            value = getattr(value, part)
        return value

    return read


# (variable, raw value, attribute path, expected parsed value)
PARSES: list[tuple[str, str, str, object]] = [
    ("ENVIRONMENT", "staging", "environment", Environment.STAGING),
    ("ENVIRONMENT", "PRODUCTION", "environment", Environment.PRODUCTION),
    ("GRPC_HOST", "127.0.0.1", "grpc.host", "127.0.0.1"),
    ("GRPC_PORT", "9030", "grpc.port", 9030),
    ("GRPC_PORT", " 0 ", "grpc.port", 0),
    ("GRPC_MAX_MESSAGE_BYTES", "2048", "grpc.max_message_bytes", 2048),
    ("GRPC_MAX_CONNECTIONS", "5", "grpc.max_connections", 5),
    ("GRPC_MAX_CONCURRENT_STREAMS", "7", "grpc.max_concurrent_streams", 7),
    ("GRPC_IDLE_TIMEOUT_MS", "60000", "grpc.idle_timeout_s", 60.0),
    ("GRPC_WRITE_TIMEOUT_MS", "5000", "grpc.write_timeout_s", 5.0),
    ("HTTP_HOST", "::1", "http.host", "::1"),
    ("HTTP_PORT", "65535", "http.port", 65535),
    ("HTTP_MAX_HEADER_BYTES", "4096", "http.max_header_bytes", 4096),
    ("HTTP_MAX_BODY_BYTES", "0", "http.max_body_bytes", 0),
    ("HTTP_REQUEST_TIMEOUT_MS", "2500", "http.request_timeout_s", 2.5),
    ("HTTP_MAX_CONNECTIONS", "3", "http.max_connections", 3),
    ("HTTP_HEAD_TIMEOUT_MS", "1500", "http.head_timeout_s", 1.5),
    ("HTTP_KEEPALIVE_TIMEOUT_MS", "30000", "http.keepalive_timeout_s", 30.0),
    ("DEFAULT_DELAY_MS", "1500", "simulation.default_delay_s", 1.5),
    ("DEFAULT_DELAY_MS", "0", "simulation.default_delay_s", 0.0),
    ("DELAY_SCENARIO_MS", "30000", "simulation.delay_scenario_s", 30.0),
    ("DEFAULT_SCENARIO", "timeout", "simulation.default_scenario", "timeout"),
    ("DEFAULT_SCENARIO", "Random", "simulation.default_scenario", "random"),
    ("RANDOM_APPROVE_RATE", "0.25", "simulation.random_approve_rate", 0.25),
    ("RANDOM_APPROVE_RATE", "0", "simulation.random_approve_rate", 0.0),
    ("RANDOM_APPROVE_RATE", "1", "simulation.random_approve_rate", 1.0),
    ("SIMULATION_SEED", "42", "simulation.seed", 42),
    ("SIMULATION_SEED", "", "simulation.seed", None),
    ("INTENT_TTL_MS", "1800000", "simulation.intent_ttl_s", 1800.0),
    ("IDEMPOTENCY_TTL_MS", str(2 * DAY_MS), "simulation.idempotency_ttl_s", 172_800.0),
    ("IDEMPOTENCY_TTL_MS", str(DAY_MS), "simulation.idempotency_ttl_s", 86_400.0),
    ("MAX_PENDING_PAYMENTS", "10", "simulation.max_pending_payments", 10),
    ("MAX_DELAY_MS", "60000", "simulation.max_delay_s", 60.0),
    ("AWS_REGION", "us-east-1", "aws.region", "us-east-1"),
    ("AWS_PROFILE", "dev", "aws.profile", "dev"),
    ("AWS_PROFILE", "  ", "aws.profile", None),
    ("EVENT_BUS_NAME", "other-bus", "aws.event_bus_name", "other-bus"),
    ("PAYMENT_EVENT_SOURCE", "other-source", "aws.event_source", "other-source"),
    ("PAYMENT_WEBHOOK_QUEUE_URL", "http://q/1", "aws.webhook_queue_url", "http://q/1"),
    ("PAYMENT_WEBHOOK_DLQ_URL", "http://q/dlq", "aws.webhook_dlq_url", "http://q/dlq"),
    ("WEBHOOK_SECRET", "s3cret", "webhook.secret", "s3cret"),
    ("LOG_LEVEL", "DEBUG", "log.level", "debug"),
    ("LOG_FORMAT", "json", "log.json", True),
    ("LOG_FORMAT", "console", "log.json", False),
    ("SHUTDOWN_GRACE_MS", "5000", "shutdown_grace_s", 5.0),
    ("DRAIN_DELAY_MS", "0", "drain_delay_s", 0.0),
    ("DRAIN_DELAY_MS", "2500", "drain_delay_s", 2.5),
    ("SHUTDOWN_PENDING_POLICY", "Resolve", "pending_on_shutdown", "resolve"),
    ("RETENTION_MS", "60000", "simulation.retention_s", 60.0),
    ("SWEEP_INTERVAL_MS", "250", "simulation.sweep_interval_s", 0.25),
    ("SIMULATION_TIME_SCALE", "0.001", "simulation.time_scale", 0.001),
    ("SIMULATION_TIME_SCALE", "1", "simulation.time_scale", 1.0),
    ("PAYMENT_URL_BASE", "http://pay.example/x/", "payment_url_base", "http://pay.example/x"),
]


@pytest.mark.parametrize(("variable", "raw", "path", "expected"), PARSES)
def test_every_variable_parses(variable: str, raw: str, path: str, expected: object) -> None:
    settings = Settings.from_env({variable: raw})
    assert _get(path)(settings) == expected


# (environment, the variable the error must name)
BAD: list[tuple[dict[str, str], str]] = [
    ({"GRPC_PORT": "abc"}, "GRPC_PORT"),
    ({"GRPC_PORT": "80.5"}, "GRPC_PORT"),
    ({"GRPC_PORT": "70000"}, "GRPC_PORT"),
    ({"GRPC_PORT": "65536"}, "GRPC_PORT"),
    ({"GRPC_PORT": "-1"}, "GRPC_PORT"),
    ({"HTTP_PORT": "x"}, "HTTP_PORT"),
    ({"HTTP_PORT": "99999"}, "HTTP_PORT"),
    ({"GRPC_MAX_MESSAGE_BYTES": "10"}, "GRPC_MAX_MESSAGE_BYTES"),
    ({"GRPC_MAX_CONNECTIONS": "0"}, "GRPC_MAX_CONNECTIONS"),
    ({"GRPC_IDLE_TIMEOUT_MS": "10"}, "GRPC_IDLE_TIMEOUT_MS"),
    ({"GRPC_MAX_CONCURRENT_STREAMS": "0"}, "GRPC_MAX_CONCURRENT_STREAMS"),
    ({"HTTP_MAX_HEADER_BYTES": "1"}, "HTTP_MAX_HEADER_BYTES"),
    ({"HTTP_MAX_BODY_BYTES": "-1"}, "HTTP_MAX_BODY_BYTES"),
    ({"HTTP_REQUEST_TIMEOUT_MS": "0"}, "HTTP_REQUEST_TIMEOUT_MS"),
    ({"HTTP_MAX_CONNECTIONS": "0"}, "HTTP_MAX_CONNECTIONS"),
    ({"DEFAULT_DELAY_MS": "-1"}, "DEFAULT_DELAY_MS"),
    ({"DEFAULT_DELAY_MS": "2s"}, "DEFAULT_DELAY_MS"),
    ({"DEFAULT_DELAY_MS": "2000.5"}, "DEFAULT_DELAY_MS"),
    ({"DELAY_SCENARIO_MS": "-5"}, "DELAY_SCENARIO_MS"),
    ({"DEFAULT_SCENARIO": "succeed"}, "DEFAULT_SCENARIO"),
    ({"DEFAULT_SCENARIO": "unspecified"}, "DEFAULT_SCENARIO"),
    ({"RANDOM_APPROVE_RATE": "1.5"}, "RANDOM_APPROVE_RATE"),
    ({"RANDOM_APPROVE_RATE": "-0.1"}, "RANDOM_APPROVE_RATE"),
    ({"RANDOM_APPROVE_RATE": "70%"}, "RANDOM_APPROVE_RATE"),
    ({"RANDOM_APPROVE_RATE": "nan"}, "RANDOM_APPROVE_RATE"),
    ({"SIMULATION_SEED": "abc"}, "SIMULATION_SEED"),
    ({"INTENT_TTL_MS": "0"}, "INTENT_TTL_MS"),
    ({"IDEMPOTENCY_TTL_MS": str(DAY_MS - 1)}, "IDEMPOTENCY_TTL_MS"),
    ({"IDEMPOTENCY_TTL_MS": "3600000"}, "IDEMPOTENCY_TTL_MS"),
    ({"MAX_PENDING_PAYMENTS": "0"}, "MAX_PENDING_PAYMENTS"),
    ({"MAX_DELAY_MS": "0"}, "MAX_DELAY_MS"),
    ({"ENVIRONMENT": "prod"}, "ENVIRONMENT"),
    ({"ENVIRONMENT": "test"}, "ENVIRONMENT"),
    ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"AWS_REGION": ""}, "AWS_REGION"),
    ({"AWS_REGION": "   "}, "AWS_REGION"),
    ({"EVENT_BUS_NAME": ""}, "EVENT_BUS_NAME"),
    ({"PAYMENT_EVENT_SOURCE": " "}, "PAYMENT_EVENT_SOURCE"),
    ({"WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET"),
    ({"SHUTDOWN_GRACE_MS": "-1"}, "SHUTDOWN_GRACE_MS"),
    ({"DRAIN_DELAY_MS": "-1"}, "DRAIN_DELAY_MS"),
    ({"SHUTDOWN_PENDING_POLICY": "drop"}, "SHUTDOWN_PENDING_POLICY"),
    # handover needs a shared store (STORE_URL)
    ({"SHUTDOWN_PENDING_POLICY": "handover"}, "SHUTDOWN_PENDING_POLICY"),
    ({"STORE_URL": "http://cache:6379"}, "STORE_URL"),
    ({"STORE_URL": "redis://"}, "STORE_URL"),
    ({"STORE_URL": "redis://cache:99999"}, "STORE_URL"),
    ({"STORE_URL": "redis://cache:6379/zero"}, "STORE_URL"),
    ({"REDIS_URL": "cache:6379"}, "REDIS_URL"),
    ({"STORE_URL": "redis://c", "STORE_KEY_PREFIX": "a b"}, "STORE_KEY_PREFIX"),
    ({"STORE_URL": "redis://c", "STORE_KEY_PREFIX": "{x}"}, "STORE_KEY_PREFIX"),
    ({"STORE_URL": "redis://c", "STORE_LEASE_MS": "50"}, "STORE_LEASE_MS"),
    (
        {"STORE_URL": "redis://c", "STORE_LEASE_MS": "1000", "STORE_TAKEOVER_INTERVAL_MS": "1000"},
        "STORE_LEASE_MS",
    ),
    ({"REUSE_PORT": "true"}, "REUSE_PORT"),  # processes sharing a port must share a store
    ({"RETENTION_MS": "0"}, "RETENTION_MS"),
    ({"SWEEP_INTERVAL_MS": "5"}, "SWEEP_INTERVAL_MS"),
    ({"SIMULATION_TIME_SCALE": "0"}, "SIMULATION_TIME_SCALE"),
    ({"SIMULATION_TIME_SCALE": "2"}, "SIMULATION_TIME_SCALE"),
    ({"SIMULATION_TIME_SCALE": "fast"}, "SIMULATION_TIME_SCALE"),
    ({"PAYMENT_URL_BASE": "ftp://pay.example"}, "PAYMENT_URL_BASE"),
    ({"PAYMENT_URL_BASE": "pay.example"}, "PAYMENT_URL_BASE"),
    # Delays must be shorter than the intent's lifetime.
    ({"DEFAULT_DELAY_MS": "900000"}, "DEFAULT_DELAY_MS"),
    ({"DEFAULT_DELAY_MS": "1000000"}, "DEFAULT_DELAY_MS"),
    ({"DELAY_SCENARIO_MS": "900000"}, "DELAY_SCENARIO_MS"),
    ({"MAX_DELAY_MS": "900000"}, "MAX_DELAY_MS"),
    ({"INTENT_TTL_MS": "600000"}, "MAX_DELAY_MS"),  # MAX_DELAY_MS default is 600000
    (
        {"INTENT_TTL_MS": "60000", "MAX_DELAY_MS": "30000", "DEFAULT_DELAY_MS": "60000"},
        "DEFAULT_DELAY_MS",
    ),
]


@pytest.mark.parametrize(("env", "variable"), BAD, ids=[f"{v}={e}" for e, v in BAD])
def test_bad_value_raises_config_error_naming_the_variable(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable
    message = str(info.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("HTTP_PORT", "-1"),
        ("GRPC_PORT", "70000"),
        ("WORKER_HTTP_PORT", "abc"),
        ("GRPC_PORT", "80.5"),
    ],
)
def test_every_bad_port_is_refused_with_one_wording(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: raw})
    assert str(info.value) == f"{variable}: must be a TCP port (0-65535), got {raw!r}"


def test_the_secret_never_appears_in_repr() -> None:
    secret = "very-secret-hmac-key-1234"
    settings = Settings.from_env({"WEBHOOK_SECRET": secret})
    assert settings.webhook.secret == secret
    assert secret not in repr(settings)
    assert secret not in repr(settings.webhook)
    assert secret not in str(settings)
    # The default secret is not leaked either.
    assert "payment-sim-dev-secret" not in repr(Settings.from_env({}))


@pytest.mark.parametrize(
    ("environment", "log_format", "json"),
    [
        ("development", None, False),
        ("staging", None, False),
        ("production", None, True),
        ("development", "auto", False),
        ("staging", "auto", False),
        ("production", "auto", True),
        ("production", "console", False),
        ("development", "json", True),
        ("staging", "JSON", True),
    ],
)
def test_log_format_auto_gives_json_only_in_production(
    environment: str, log_format: str | None, json: bool
) -> None:
    env = {"ENVIRONMENT": environment}
    if log_format is not None:
        env["LOG_FORMAT"] = log_format
    assert Settings.from_env(env).log.json is json


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.grpc.port = 1  # type: ignore[misc]


def test_cli_exits_2_with_one_line_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GRPC_PORT", "HTTP_PORT")}
    env["GRPC_PORT"] = "abc"
    result = subprocess.run(
        [sys.executable, "-m", "paysim", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "GRPC_PORT" in lines[0]
    assert "abc" in lines[0]


def test_the_store_is_in_memory_unless_a_redis_url_is_given() -> None:
    assert not Settings.from_env({}).store.shared
    assert not Settings.from_env({"STORE_URL": "memory"}).store.shared
    assert Settings.from_env({}).pending_on_shutdown == "resolve"
    shared = Settings.from_env({"REDIS_URL": "rediss://user:pw@cache.example:6380/2"})
    assert shared.store.shared
    assert shared.pending_on_shutdown == "handover"  # the default with a shared store
    assert shared.store.redacted_url == "rediss://cache.example:6380/2"
    # STORE_URL wins over its alias; resolve may still be chosen.
    both = Settings.from_env(
        {
            "STORE_URL": "redis://a:1/0",
            "REDIS_URL": "redis://b:2/0",
            "SHUTDOWN_PENDING_POLICY": "resolve",
            "REUSE_PORT": "1",
        }
    )
    assert both.store.url == "redis://a:1/0"
    assert both.pending_on_shutdown == "resolve"
    assert both.reuse_port


def test_store_credentials_never_appear_in_repr_or_errors() -> None:
    settings = Settings.from_env(
        {"STORE_URL": "redis://:url-secret@cache:6379/0", "STORE_PASSWORD": "pw-secret"}
    )
    assert "url-secret" not in repr(settings)
    assert "pw-secret" not in repr(settings)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"STORE_URL": "redis://:url-secret@cache:port/0"})
    assert "url-secret" not in str(info.value)


def test_every_grpc_and_http_setting_reaches_its_limits():
    """A setting read from the environment but not passed on would do nothing."""
    from paysim.entrypoints.grpc.transport import GrpcLimits
    from paysim.entrypoints.http import HttpLimits

    settings = Settings.from_env(
        {
            "GRPC_MAX_MESSAGE_BYTES": "2048",
            "GRPC_MAX_CONNECTIONS": "5",
            "GRPC_MAX_CONCURRENT_STREAMS": "7",
            "GRPC_IDLE_TIMEOUT_MS": "60000",
            "GRPC_WRITE_TIMEOUT_MS": "5000",
            "HTTP_MAX_HEADER_BYTES": "4096",
            "HTTP_MAX_BODY_BYTES": "10",
            "HTTP_REQUEST_TIMEOUT_MS": "2500",
            "HTTP_MAX_CONNECTIONS": "3",
            "HTTP_HEAD_TIMEOUT_MS": "1500",
            "HTTP_KEEPALIVE_TIMEOUT_MS": "700",
        }
    )
    for source, limits in (
        (settings.grpc, GrpcLimits.from_settings(settings.grpc)),
        (settings.http, HttpLimits.from_settings(settings.http)),
    ):
        shared = {f.name for f in dataclasses.fields(source)} & {
            f.name for f in dataclasses.fields(limits)
        }
        assert len(shared) >= 5
        for name in shared:
            assert getattr(limits, name) == getattr(source, name), name
