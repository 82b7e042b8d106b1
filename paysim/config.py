"""Settings: read once from the environment into frozen values, validated at start.

``Settings.from_env(os.environ)`` is called once by the CLI. A bad value raises
``ConfigError`` naming the variable; the CLI prints that one line and exits 2.
Each component receives only its own part (``settings.grpc``,
``settings.simulation``, ...). Durations are milliseconds in the environment
(``*_MS``) and seconds (float) inside the program.
"""

from __future__ import annotations

import base64
import enum
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """One environment variable has a bad value. ``str()`` is the one-line message."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class Environment(enum.Enum):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


SCENARIO_NAMES = ("approve", "fail", "delay", "random", "timeout")


@dataclass(frozen=True)
class GrpcSettings:
    host: str = ""  # "" means every interface (IPv4 and IPv6)
    port: int = 8030
    max_message_bytes: int = 4 * 1024 * 1024
    max_connections: int = 10_000
    max_concurrent_streams: int = 256
    # A connection with no call for this long gets GOAWAY (clients reconnect).
    idle_timeout_s: float = 300.0
    # A response the client does not read (window shut) for this long is dropped.
    write_timeout_s: float = 30.0


@dataclass(frozen=True)
class HttpSettings:
    host: str = ""
    port: int = 8031
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    request_timeout_s: float = 10.0
    max_connections: int = 256
    # Slow clients: a request head must be complete this long after the
    # connection opens (or the next request's first byte); an idle keep-alive
    # connection is closed after keepalive_timeout_s.
    head_timeout_s: float = 5.0
    keepalive_timeout_s: float = 5.0


@dataclass(frozen=True)
class SimulationSettings:
    default_delay_s: float = 2.0
    delay_scenario_s: float = 10.0
    default_scenario: str = "approve"
    random_approve_rate: float = 0.7
    seed: int | None = None
    intent_ttl_s: float = 900.0
    idempotency_ttl_s: float = 86_400.0
    max_pending_payments: int = 100_000
    max_delay_s: float = 600.0
    # Settled payments (COMPLETED, FAILED, CANCELLED, REFUNDED, EXPIRED) are
    # dropped this long after their last change; idempotency keys after their TTL.
    retention_s: float = 86_400.0
    sweep_interval_s: float = 1.0
    # Time compression: every simulated delay (outcomes, expiry, scheduled
    # simulations) and the webhook retry schedule is multiplied by this, so a
    # run that models hours finishes in seconds (0.001: a 15-minute expiry
    # takes 0.9 s). Stamps stay real wall-clock times.
    time_scale: float = 1.0


@dataclass(frozen=True)
class AwsSettings:
    region: str = "ap-northeast-2"
    profile: str | None = None
    event_bus_name: str = "ticket-reservation-events"
    event_source: str = "payment-sim-api"
    webhook_queue_url: str | None = None
    webhook_dlq_url: str | None = None


RETRY_SCHEDULES = ("default", "fast", "toss")
PENDING_POLICIES = ("resolve", "handover")
SIGNATURE_STYLES = ("legacy", "standard")


@dataclass(frozen=True)
class WebhookSettings:
    # WEBHOOK_SECRET may hold several comma-separated secrets (rotation): the
    # legacy header is signed with the first, Standard Webhooks with each.
    secrets: tuple[str, ...] = field(default=("payment-sim-dev-secret",), repr=False)
    signature_style: str = "legacy"  # "standard" adds the Standard Webhooks headers
    max_attempts: int = 8
    timeout_s: float = 10.0
    retry_schedule: str = "default"
    concurrency: int = 8
    queue_size: int = 10_000
    allowed_hosts: frozenset[str] = frozenset()
    allow_loopback: bool = True  # development only
    allow_private: bool = True  # development only
    # Chaos (development and staging only; refused in production): deliveries a
    # real PG makes now and then and consumers must survive. See the README's
    # Chaos section and paysim/webhooks/dispatcher.py.
    chaos_duplicate_rate: float = 0.0  # a delivered webhook is sent again, same X-Webhook-Id
    chaos_reorder_rate: float = 0.0  # a delivery is held back so a later change overtakes it
    chaos_reorder_hold_s: float = 1.0  # how long it waits for that later change
    chaos_seed: int | None = None  # chaos decisions are a function of this and the change

    @property
    def secret(self) -> str:
        return self.secrets[0]

    @property
    def chaos_enabled(self) -> bool:
        return self.chaos_duplicate_rate > 0.0 or self.chaos_reorder_rate > 0.0


@dataclass(frozen=True)
class EventSettings:
    enabled: bool = True
    flush_interval_s: float = 0.1
    buffer_size: int = 100_000
    call_timeout_s: float = 5.0
    concurrency: int = 4


@dataclass(frozen=True)
class WorkerSettings:
    queue_url: str | None = None
    reservation_api_url: str | None = None
    reservation_timeout_s: float = 5.0
    http_host: str = ""
    http_port: int = 8040
    pollers: int = 4
    concurrency: int = 64
    wait_time_s: int = 20
    visibility_timeout_s: int = 30


STORE_SCHEMES = ("redis", "rediss")


@dataclass(frozen=True)
class StoreSettings:
    """Where payments live: in this process (``url`` None) or in Redis (shared).

    STORE_URL (or REDIS_URL) is ``redis://[user[:password]@]host[:port][/db]``,
    ``rediss://`` for TLS. The password may come from STORE_PASSWORD instead (a
    Kubernetes Secret), and STORE_TLS_CA_FILE names a CA bundle for ``rediss``.
    """

    url: str | None = field(default=None, repr=False)  # may carry a password
    password: str | None = field(default=None, repr=False)
    tls_ca_file: str | None = None
    key_prefix: str = "paysim"
    # A replica that has not renewed its lease for this long is gone: another
    # replica takes over its pending payments and undelivered notifications.
    lease_s: float = 5.0
    # How often each replica renews its lease and looks for a vanished one;
    # the takeover time is at most lease_s + takeover_interval_s.
    takeover_interval_s: float = 1.0
    replica_id: str | None = None  # default: hostname, process id and a random suffix
    timeout_s: float = 5.0  # connect and per-command timeout

    @property
    def shared(self) -> bool:
        return self.url is not None

    @property
    def redacted_url(self) -> str:
        """The URL without its password, for logs."""
        if self.url is None:
            return "memory"
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"
    json: bool = False


@dataclass(frozen=True)
class Settings:
    environment: Environment = Environment.DEVELOPMENT
    grpc: GrpcSettings = GrpcSettings()
    http: HttpSettings = HttpSettings()
    simulation: SimulationSettings = SimulationSettings()
    aws: AwsSettings = AwsSettings()
    webhook: WebhookSettings = WebhookSettings()
    events: EventSettings = EventSettings()
    worker: WorkerSettings = WorkerSettings()
    log: LogSettings = LogSettings()
    store: StoreSettings = StoreSettings()
    shutdown_grace_s: float = 20.0
    # After SIGTERM readiness turns NOT_SERVING at once and the process keeps
    # serving this long (endpoint removal in Kubernetes is asynchronous).
    drain_delay_s: float = 1.0
    # What happens to pending payments at shutdown: "resolve" (those due within
    # the grace resolve on time, the rest early) or "handover" (left to another
    # replica; needs a shared store, and is the default with one).
    pending_on_shutdown: str = "resolve"
    payment_url_base: str = "https://checkout.paysim.invalid/pay"
    # Bind the gRPC and HTTP ports with SO_REUSEPORT, so that several processes
    # (``paysim serve --workers N``, which sets it) share them; needs STORE_URL.
    reuse_port: bool = False
    # Python GC thresholds (gen0, gen1, gen2); see paysim/runtime.py.
    gc_thresholds: tuple[int, int, int] = (2_000, 10, 1_000)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        r = _Reader(env)
        environment = r.choice("ENVIRONMENT", [e.value for e in Environment], "development")
        env_kind = Environment(environment)
        log_format = r.choice("LOG_FORMAT", ["auto", "json", "console"], "auto")
        store_url = r.store_url("STORE_URL", "REDIS_URL")
        settings = cls(
            environment=env_kind,
            grpc=GrpcSettings(
                host=r.string("GRPC_HOST", ""),
                port=r.port("GRPC_PORT", 8030),
                max_message_bytes=r.integer("GRPC_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024),
                max_connections=r.integer("GRPC_MAX_CONNECTIONS", 10_000, 1),
                max_concurrent_streams=r.integer("GRPC_MAX_CONCURRENT_STREAMS", 256, 1),
                idle_timeout_s=r.millis("GRPC_IDLE_TIMEOUT_MS", 300_000, minimum=1_000),
                write_timeout_s=r.millis("GRPC_WRITE_TIMEOUT_MS", 30_000, minimum=100),
            ),
            http=HttpSettings(
                host=r.string("HTTP_HOST", ""),
                port=r.port("HTTP_PORT", 8031),
                max_header_bytes=r.integer("HTTP_MAX_HEADER_BYTES", 16 * 1024, 1024),
                max_body_bytes=r.integer("HTTP_MAX_BODY_BYTES", 64 * 1024, 0),
                request_timeout_s=r.millis("HTTP_REQUEST_TIMEOUT_MS", 10_000, minimum=1),
                max_connections=r.integer("HTTP_MAX_CONNECTIONS", 256, 1),
                head_timeout_s=r.millis("HTTP_HEAD_TIMEOUT_MS", 5_000, minimum=1),
                keepalive_timeout_s=r.millis("HTTP_KEEPALIVE_TIMEOUT_MS", 5_000, minimum=1),
            ),
            simulation=SimulationSettings(
                default_delay_s=r.millis("DEFAULT_DELAY_MS", 2_000),
                delay_scenario_s=r.millis("DELAY_SCENARIO_MS", 10_000),
                default_scenario=r.choice("DEFAULT_SCENARIO", SCENARIO_NAMES, "approve"),
                random_approve_rate=r.rate("RANDOM_APPROVE_RATE", 0.7),
                seed=r.optional_integer("SIMULATION_SEED"),
                intent_ttl_s=r.millis("INTENT_TTL_MS", 900_000, minimum=1),
                idempotency_ttl_s=r.millis("IDEMPOTENCY_TTL_MS", 86_400_000, minimum=86_400_000),
                max_pending_payments=r.integer("MAX_PENDING_PAYMENTS", 100_000, 1),
                max_delay_s=r.millis("MAX_DELAY_MS", 600_000, minimum=1),
                retention_s=r.millis("RETENTION_MS", 86_400_000, minimum=1),
                sweep_interval_s=r.millis("SWEEP_INTERVAL_MS", 1_000, minimum=10),
                time_scale=r.scale("SIMULATION_TIME_SCALE", 1.0),
            ),
            aws=AwsSettings(
                region=r.string("AWS_REGION", "ap-northeast-2", nonempty=True),
                profile=r.optional_string("AWS_PROFILE"),
                event_bus_name=r.string("EVENT_BUS_NAME", "ticket-reservation-events", True),
                event_source=r.string("PAYMENT_EVENT_SOURCE", "payment-sim-api", nonempty=True),
                webhook_queue_url=r.optional_string("PAYMENT_WEBHOOK_QUEUE_URL"),
                webhook_dlq_url=r.optional_string("PAYMENT_WEBHOOK_DLQ_URL"),
            ),
            webhook=WebhookSettings(
                secrets=r.secrets("WEBHOOK_SECRET", "payment-sim-dev-secret"),
                signature_style=r.choice("WEBHOOK_SIGNATURE_STYLE", SIGNATURE_STYLES, "legacy"),
                max_attempts=r.integer("WEBHOOK_MAX_ATTEMPTS", 8, 1),
                timeout_s=r.millis("WEBHOOK_TIMEOUT_MS", 10_000, minimum=1),
                retry_schedule=r.choice("WEBHOOK_RETRY_SCHEDULE", RETRY_SCHEDULES, "default"),
                concurrency=r.integer("WEBHOOK_CONCURRENCY", 8, 1),
                queue_size=r.integer("WEBHOOK_QUEUE_SIZE", 10_000, 1),
                allowed_hosts=r.host_list("WEBHOOK_ALLOWED_HOSTS"),
                allow_loopback=env_kind is Environment.DEVELOPMENT,
                allow_private=env_kind is Environment.DEVELOPMENT,
                chaos_duplicate_rate=r.rate("CHAOS_WEBHOOK_DUPLICATE_RATE", 0.0),
                chaos_reorder_rate=r.rate("CHAOS_WEBHOOK_REORDER_RATE", 0.0),
                chaos_reorder_hold_s=r.millis("CHAOS_WEBHOOK_REORDER_HOLD_MS", 1_000, minimum=1),
                chaos_seed=_first_set(
                    r.optional_integer("CHAOS_SEED"), r.optional_integer("SIMULATION_SEED")
                ),
            ),
            events=EventSettings(
                enabled=r.boolean("EVENTS_ENABLED", True),
                flush_interval_s=r.millis("EVENTS_FLUSH_INTERVAL_MS", 100, minimum=1),
                buffer_size=r.integer("EVENTS_BUFFER_SIZE", 100_000, 1),
                call_timeout_s=r.millis("EVENTS_CALL_TIMEOUT_MS", 5_000, minimum=1),
                concurrency=r.integer("EVENTS_CONCURRENCY", 4, 1),
            ),
            worker=WorkerSettings(
                queue_url=r.optional_string("PAYMENT_WEBHOOK_QUEUE_URL"),
                reservation_api_url=r.optional_url("RESERVATION_API_URL"),
                reservation_timeout_s=r.millis("RESERVATION_API_TIMEOUT_MS", 5_000, minimum=1),
                http_host=r.string("WORKER_HTTP_HOST", ""),
                http_port=r.port("WORKER_HTTP_PORT", 8040),
                pollers=r.integer("WORKER_POLLERS", 4, 1),
                concurrency=r.integer("WORKER_CONCURRENCY", 64, 1),
                wait_time_s=r.integer("WORKER_WAIT_TIME_S", 20, 0),
                visibility_timeout_s=r.integer("WORKER_VISIBILITY_TIMEOUT_S", 30, 0),
            ),
            log=LogSettings(
                level=r.choice("LOG_LEVEL", ["debug", "info", "warning", "error"], "info"),
                json=(log_format == "json")
                or (log_format == "auto" and env_kind is Environment.PRODUCTION),
            ),
            store=StoreSettings(
                url=store_url,
                password=r.optional_string("STORE_PASSWORD"),
                tls_ca_file=r.optional_string("STORE_TLS_CA_FILE"),
                key_prefix=r.key_prefix("STORE_KEY_PREFIX", "paysim"),
                lease_s=r.millis("STORE_LEASE_MS", 5_000, minimum=100),
                takeover_interval_s=r.millis("STORE_TAKEOVER_INTERVAL_MS", 1_000, minimum=10),
                replica_id=r.optional_string("REPLICA_ID"),
                timeout_s=r.millis("STORE_TIMEOUT_MS", 5_000, minimum=1),
            ),
            shutdown_grace_s=r.millis("SHUTDOWN_GRACE_MS", 20_000),
            drain_delay_s=r.millis("DRAIN_DELAY_MS", 1_000),
            pending_on_shutdown=r.choice(
                "SHUTDOWN_PENDING_POLICY",
                PENDING_POLICIES,
                "handover" if store_url is not None else "resolve",
            ),
            payment_url_base=r.url("PAYMENT_URL_BASE", "https://checkout.paysim.invalid/pay"),
            gc_thresholds=r.thresholds("GC_THRESHOLDS", (2_000, 10, 1_000)),
            reuse_port=r.boolean("REUSE_PORT", False),
        )
        if settings.pending_on_shutdown == "handover" and not settings.store.shared:
            raise ConfigError(
                "SHUTDOWN_PENDING_POLICY",
                "handover needs a shared store (set STORE_URL to a Redis URL); "
                "with the in-memory store use resolve",
            )
        if settings.reuse_port and not settings.store.shared:
            raise ConfigError(
                "REUSE_PORT",
                "processes sharing a port must share their payments: set STORE_URL to Redis",
            )
        if settings.store.lease_s <= settings.store.takeover_interval_s:
            raise ConfigError("STORE_LEASE_MS", "must be longer than STORE_TAKEOVER_INTERVAL_MS")
        _refuse_chaos_in_production(settings)
        if settings.simulation.max_delay_s >= settings.simulation.intent_ttl_s:
            raise ConfigError("MAX_DELAY_MS", "must be smaller than INTENT_TTL_MS")
        for name, value in (
            ("DEFAULT_DELAY_MS", settings.simulation.default_delay_s),
            ("DELAY_SCENARIO_MS", settings.simulation.delay_scenario_s),
        ):
            if value >= settings.simulation.intent_ttl_s:
                raise ConfigError(name, "must be smaller than INTENT_TTL_MS")
        return settings


def _first_set(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _refuse_chaos_in_production(settings: Settings) -> None:
    """Chaos settings make paysim misbehave on purpose: never where real consumers listen."""
    if settings.environment is not Environment.PRODUCTION:
        return
    for name, value in (
        ("CHAOS_WEBHOOK_DUPLICATE_RATE", settings.webhook.chaos_duplicate_rate),
        ("CHAOS_WEBHOOK_REORDER_RATE", settings.webhook.chaos_reorder_rate),
    ):
        if value > 0.0:
            raise ConfigError(name, "chaos injection is refused in production; set it to 0")


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _get(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value if value else None

    def _parse(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        raw = self._get(name)
        return default if raw is None else parse(raw)

    def string(self, name: str, default: str, nonempty: bool = False) -> str:
        raw = self._env.get(name)
        if raw is None:
            return default
        if nonempty and not raw.strip():
            raise ConfigError(name, "must not be empty")
        return raw.strip()

    def optional_string(self, name: str) -> str | None:
        return self._get(name)

    def integer(self, name: str, default: int, minimum: int | None = None) -> int:
        def parse(raw: str) -> int:
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(name, f"expected an integer, got {raw!r}") from None
            if minimum is not None and value < minimum:
                raise ConfigError(name, f"must be at least {minimum}, got {value}")
            return value

        return self._parse(name, default, parse)

    def optional_integer(self, name: str) -> int | None:
        raw = self._get(name)
        return None if raw is None else self.integer(name, 0)

    def port(self, name: str, default: int) -> int:
        value = self.integer(name, default, 0)
        if value > 65535:
            raise ConfigError(name, f"must be a TCP port (0-65535), got {value}")
        return value

    def millis(self, name: str, default_ms: int, minimum: int = 0) -> float:
        return self.integer(name, default_ms, minimum) / 1000.0

    def scale(self, name: str, default: float) -> float:
        def parse(raw: str) -> float:
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(name, f"expected a number, got {raw!r}") from None
            if not 1e-6 <= value <= 1.0:
                raise ConfigError(name, f"must be between 0.000001 and 1, got {raw}")
            return value

        return self._parse(name, default, parse)

    def rate(self, name: str, default: float) -> float:
        def parse(raw: str) -> float:
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(name, f"expected a number between 0 and 1, got {raw!r}") from None
            if not 0.0 <= value <= 1.0:
                raise ConfigError(name, f"must be between 0 and 1, got {value}")
            return value

        return self._parse(name, default, parse)

    def thresholds(self, name: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
        def parse(raw: str) -> tuple[int, int, int]:
            parts = raw.split(",")
            if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
                raise ConfigError(
                    name, f"expected three whole numbers like 2000,10,1000; got {raw!r}"
                )
            a, b, c = (int(p) for p in parts)
            if a < 1:
                raise ConfigError(name, "the first threshold must be at least 1")
            return a, b, c

        return self._parse(name, default, parse)

    def secrets(self, name: str, default: str) -> tuple[str, ...]:
        raw = self._env.get(name)
        if raw is None:
            return (default,)
        values = tuple(part.strip() for part in raw.split(","))
        if not values or not all(values):
            raise ConfigError(name, "must hold one or more non-empty, comma-separated secrets")
        for value in values:
            if value.startswith("whsec_"):
                try:
                    base64.b64decode(value[len("whsec_") :], validate=True)
                except ValueError:
                    raise ConfigError(
                        name, "a whsec_ secret must be base64 after the prefix"
                    ) from None
        return values

    def host_list(self, name: str) -> frozenset[str]:
        raw = self._get(name)
        if raw is None:
            return frozenset()
        return frozenset(h.strip().lower() for h in raw.split(",") if h.strip())

    def boolean(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            value = raw.lower()
            if value in ("1", "true", "yes", "on"):
                return True
            if value in ("0", "false", "no", "off"):
                return False
            raise ConfigError(name, f"expected true or false, got {raw!r}")

        return self._parse(name, default, parse)

    def store_url(self, name: str, alias: str) -> str | None:
        """STORE_URL, else its alias REDIS_URL; never echoes the value (it may hold a password)."""
        used = name if self._get(name) is not None else alias
        raw = self._get(used)
        if raw is None:
            return None
        if raw == "memory":
            return None
        try:
            parts = urllib.parse.urlsplit(raw)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ConfigError(used, "expected redis://host:port[/db] or rediss://...") from None
        if parts.scheme not in STORE_SCHEMES or not parts.hostname:
            raise ConfigError(
                used, "expected redis://host:port[/db], rediss://... (TLS), or memory"
            )
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ConfigError(used, "the path must be a database number, like /0")
        return raw

    def key_prefix(self, name: str, default: str) -> str:
        value = self.string(name, default, nonempty=True)
        if not all(c.isalnum() or c in "-_.:" for c in value):
            raise ConfigError(name, "use letters, digits and - _ . : only")
        return value

    def optional_url(self, name: str) -> str | None:
        raw = self._get(name)
        return None if raw is None else self.url(name, raw)

    def url(self, name: str, default: str) -> str:
        def parse(raw: str) -> str:
            try:
                parts = urllib.parse.urlsplit(raw)
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError:
                raise ConfigError(name, f"expected an http(s) URL, got {raw!r}") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(name, f"expected an http(s) URL with a host, got {raw!r}")
            return raw.rstrip("/")

        return self._parse(name, default, parse)

    def choice(self, name: str, choices: list[str] | tuple[str, ...], default: str) -> str:
        def parse(raw: str) -> str:
            value = raw.lower()
            if value not in choices:
                raise ConfigError(name, f"expected one of {', '.join(choices)}, got {raw!r}")
            return value

        return self._parse(name, default, parse)
