"""Settings for a simulator under test: keyword arguments named like the environment.

Every variable of the README's configuration table is a keyword argument,
lower-case: ``default_scenario="fail"``, ``default_delay_ms=500``,
``webhook_signature_style="standard"``, ``simulation_seed=7``. The values go
through ``Settings.from_env``, the reader ``paysim serve`` uses, so they are
validated the same way and a bad one raises ``ConfigError`` naming it. A name
that no setting reads is a ``TypeError``, as for any function.

The machine's own environment is never read: a test gets the same simulator
on every machine. What differs from ``paysim serve`` by default
(``TEST_DEFAULTS``): loopback on ephemeral ports, no drain delay, a one-second
shutdown grace, events flushed after 1 ms, a sweep a minute, no gRPC idle timeout, and a fixed
seed, so a RANDOM scenario decides the same way on every run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paysim.config import Settings

TEST_DEFAULTS: Mapping[str, str] = {
    "ENVIRONMENT": "development",  # webhooks to loopback are allowed
    "GRPC_HOST": "127.0.0.1",
    "GRPC_PORT": "0",
    "HTTP_HOST": "127.0.0.1",
    "HTTP_PORT": "0",
    "DRAIN_DELAY_MS": "0",
    "SHUTDOWN_GRACE_MS": "1000",
    "SIMULATION_SEED": "0",
    # Events go out within a millisecond, so ``wait_status`` (woken by them) is prompt.
    "EVENTS_FLUSH_INTERVAL_MS": "1",
    # Retention is a day: sweeping once a minute keeps days of virtual time cheap.
    "SWEEP_INTERVAL_MS": "60000",
    # A jump of virtual time must not close the test's idle client connections.
    "GRPC_IDLE_TIMEOUT_MS": str(10 * 365 * 86_400_000),
}


class _Recorded(dict[str, str]):
    """A mapping that remembers which names were looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, frozenset, set)):
        return ",".join(str(v) for v in value)
    return str(value)


def build_settings(**overrides: object) -> Settings:
    """``Settings`` for a test: ``TEST_DEFAULTS`` with ``overrides`` on top.

    ``overrides`` are environment variable names in lower case; a value of
    None leaves the variable unset. Lists and tuples become comma-separated.
    """
    env = dict(TEST_DEFAULTS)
    for name, value in overrides.items():
        key = name.upper()
        if value is None:
            env.pop(key, None)
        else:
            env[key] = _text(value)
    recorded = _Recorded(env)
    settings = Settings.from_env(recorded)
    unknown = sorted(name for name in overrides if name.upper() not in recorded.read)
    if unknown:
        raise TypeError(f"unknown paysim setting(s): {', '.join(unknown)}")
    return settings
