"""Settings: read once from the environment into frozen values, validated at start.

``Settings.from_env(os.environ)`` is called once by the CLI. A bad value raises
``ConfigError`` naming the variable; the CLI prints that one line and exits 2.
Each component receives only its own part (``settings.grpc``,
``settings.simulation``, ...). Durations are milliseconds in the environment
(``*_MS``) and seconds (float) inside the program.

Every default is written once, as the dataclass field's default; ``from_env``
reads each variable with ``paysim.env_reader.EnvReader``, passing that field
default. Names that settings choose from come from their one definition:
scenarios from the domain (``SCENARIO_NAMES``), retry schedules from
``paysim.backoff.SCHEDULES``.
"""

from __future__ import annotations

import enum
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from paysim.backoff import SCHEDULES
from paysim.console.settings import ConsoleSettings, read_console
from paysim.domain.clock import SimClock
from paysim.domain.models import SCENARIO_NAMES
from paysim.env_reader import STORE_SCHEMES as STORE_SCHEMES
from paysim.env_reader import ConfigError as ConfigError
from paysim.env_reader import EnvReader
from paysim.faults.settings import ApiChaosSettings, read_api_chaos


class Environment(enum.Enum):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


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
    # simulations) and the webhook retry schedule goes through ``clock``, so a
    # run that models hours finishes in seconds (0.001: a 15-minute expiry
    # takes 0.9 s). Stamps stay real wall-clock times.
    time_scale: float = 1.0

    @property
    def clock(self) -> SimClock:
        """The one simulated clock: SIMULATION_TIME_SCALE is applied there, nowhere else."""
        return SimClock(self.time_scale)


@dataclass(frozen=True)
class AwsSettings:
    region: str = "ap-northeast-2"
    profile: str | None = None
    event_bus_name: str = "ticket-reservation-events"
    event_source: str = "payment-sim-api"
    webhook_queue_url: str | None = None
    webhook_dlq_url: str | None = None


RETRY_SCHEDULES = tuple(SCHEDULES)  # the names come from the schedules themselves
PENDING_POLICIES = ("resolve", "handover")
SIGNATURE_STYLES = ("legacy", "standard")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
_DAY_MS = 86_400_000


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
    # Chaos section and paysim/delivery/webhook_chaos.py.
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
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    api_chaos: ApiChaosSettings = field(default_factory=ApiChaosSettings)  # CHAOS_API_*
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
    gc_thresholds: tuple[int, int, int] = (20_000, 10, 1_000)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """The settings ``env`` asks for; every default is the dataclass field's."""
        r = EnvReader(env)
        d = cls()
        environment = r.choice("ENVIRONMENT", [e.value for e in Environment], d.environment.value)
        env_kind = Environment(environment)
        store_url = r.store_url("STORE_URL", "REDIS_URL")
        settings = cls(
            environment=env_kind,
            grpc=_grpc(r, d.grpc),
            http=_http(r, d.http),
            simulation=_simulation(r, d.simulation),
            aws=_aws(r, d.aws),
            webhook=_webhook(r, d.webhook, development=env_kind is Environment.DEVELOPMENT),
            events=_events(r, d.events),
            worker=_worker(r, d.worker),
            log=_log(r, d.log, production=env_kind is Environment.PRODUCTION),
            store=_store(r, d.store, store_url),
            console=read_console(r, d.console),
            api_chaos=read_api_chaos(r, _chaos_seed(r)),
            shutdown_grace_s=r.millis("SHUTDOWN_GRACE_MS", d.shutdown_grace_s),
            drain_delay_s=r.millis("DRAIN_DELAY_MS", d.drain_delay_s),
            pending_on_shutdown=r.choice(
                "SHUTDOWN_PENDING_POLICY",
                PENDING_POLICIES,
                "handover" if store_url is not None else d.pending_on_shutdown,
            ),
            payment_url_base=r.url("PAYMENT_URL_BASE", d.payment_url_base),
            gc_thresholds=r.thresholds("GC_THRESHOLDS", d.gc_thresholds),
            reuse_port=r.boolean("REUSE_PORT", d.reuse_port),
        )
        _check(settings)
        return settings


def _grpc(r: EnvReader, d: GrpcSettings) -> GrpcSettings:
    return GrpcSettings(
        host=r.string("GRPC_HOST", d.host),
        port=r.port("GRPC_PORT", d.port),
        max_message_bytes=r.integer("GRPC_MAX_MESSAGE_BYTES", d.max_message_bytes, 1024),
        max_connections=r.integer("GRPC_MAX_CONNECTIONS", d.max_connections, 1),
        max_concurrent_streams=r.integer(
            "GRPC_MAX_CONCURRENT_STREAMS", d.max_concurrent_streams, 1
        ),
        idle_timeout_s=r.millis("GRPC_IDLE_TIMEOUT_MS", d.idle_timeout_s, minimum=1_000),
        write_timeout_s=r.millis("GRPC_WRITE_TIMEOUT_MS", d.write_timeout_s, minimum=100),
    )


def _http(r: EnvReader, d: HttpSettings) -> HttpSettings:
    return HttpSettings(
        host=r.string("HTTP_HOST", d.host),
        port=r.port("HTTP_PORT", d.port),
        max_header_bytes=r.integer("HTTP_MAX_HEADER_BYTES", d.max_header_bytes, 1024),
        max_body_bytes=r.integer("HTTP_MAX_BODY_BYTES", d.max_body_bytes, 0),
        request_timeout_s=r.millis("HTTP_REQUEST_TIMEOUT_MS", d.request_timeout_s, minimum=1),
        max_connections=r.integer("HTTP_MAX_CONNECTIONS", d.max_connections, 1),
        head_timeout_s=r.millis("HTTP_HEAD_TIMEOUT_MS", d.head_timeout_s, minimum=1),
        keepalive_timeout_s=r.millis("HTTP_KEEPALIVE_TIMEOUT_MS", d.keepalive_timeout_s, minimum=1),
    )


def _simulation(r: EnvReader, d: SimulationSettings) -> SimulationSettings:
    return SimulationSettings(
        default_delay_s=r.millis("DEFAULT_DELAY_MS", d.default_delay_s),
        delay_scenario_s=r.millis("DELAY_SCENARIO_MS", d.delay_scenario_s),
        default_scenario=r.choice("DEFAULT_SCENARIO", SCENARIO_NAMES, d.default_scenario),
        random_approve_rate=r.rate("RANDOM_APPROVE_RATE", d.random_approve_rate),
        seed=r.optional_integer("SIMULATION_SEED"),
        intent_ttl_s=r.millis("INTENT_TTL_MS", d.intent_ttl_s, minimum=1),
        # Never shorter than a day: a retried request must find its key.
        idempotency_ttl_s=r.millis("IDEMPOTENCY_TTL_MS", d.idempotency_ttl_s, _DAY_MS),
        max_pending_payments=r.integer("MAX_PENDING_PAYMENTS", d.max_pending_payments, 1),
        max_delay_s=r.millis("MAX_DELAY_MS", d.max_delay_s, minimum=1),
        retention_s=r.millis("RETENTION_MS", d.retention_s, minimum=1),
        sweep_interval_s=r.millis("SWEEP_INTERVAL_MS", d.sweep_interval_s, minimum=10),
        time_scale=r.scale("SIMULATION_TIME_SCALE", d.time_scale),
    )


def _aws(r: EnvReader, d: AwsSettings) -> AwsSettings:
    return AwsSettings(
        region=r.string("AWS_REGION", d.region, nonempty=True),
        profile=r.optional_string("AWS_PROFILE"),
        event_bus_name=r.string("EVENT_BUS_NAME", d.event_bus_name, nonempty=True),
        event_source=r.string("PAYMENT_EVENT_SOURCE", d.event_source, nonempty=True),
        webhook_queue_url=r.optional_string("PAYMENT_WEBHOOK_QUEUE_URL"),
        webhook_dlq_url=r.optional_string("PAYMENT_WEBHOOK_DLQ_URL"),
    )


def _webhook(r: EnvReader, d: WebhookSettings, *, development: bool) -> WebhookSettings:
    return WebhookSettings(
        secrets=r.secrets("WEBHOOK_SECRET", d.secrets),
        signature_style=r.choice("WEBHOOK_SIGNATURE_STYLE", SIGNATURE_STYLES, d.signature_style),
        max_attempts=r.integer("WEBHOOK_MAX_ATTEMPTS", d.max_attempts, 1),
        timeout_s=r.millis("WEBHOOK_TIMEOUT_MS", d.timeout_s, minimum=1),
        retry_schedule=r.choice("WEBHOOK_RETRY_SCHEDULE", RETRY_SCHEDULES, d.retry_schedule),
        concurrency=r.integer("WEBHOOK_CONCURRENCY", d.concurrency, 1),
        queue_size=r.integer("WEBHOOK_QUEUE_SIZE", d.queue_size, 1),
        allowed_hosts=r.host_list("WEBHOOK_ALLOWED_HOSTS"),
        allow_loopback=development,
        allow_private=development,
        chaos_duplicate_rate=r.rate("CHAOS_WEBHOOK_DUPLICATE_RATE", d.chaos_duplicate_rate),
        chaos_reorder_rate=r.rate("CHAOS_WEBHOOK_REORDER_RATE", d.chaos_reorder_rate),
        chaos_reorder_hold_s=r.millis(
            "CHAOS_WEBHOOK_REORDER_HOLD_MS", d.chaos_reorder_hold_s, minimum=1
        ),
        chaos_seed=_chaos_seed(r),
    )


def _events(r: EnvReader, d: EventSettings) -> EventSettings:
    return EventSettings(
        enabled=r.boolean("EVENTS_ENABLED", d.enabled),
        flush_interval_s=r.millis("EVENTS_FLUSH_INTERVAL_MS", d.flush_interval_s, minimum=1),
        buffer_size=r.integer("EVENTS_BUFFER_SIZE", d.buffer_size, 1),
        call_timeout_s=r.millis("EVENTS_CALL_TIMEOUT_MS", d.call_timeout_s, minimum=1),
        concurrency=r.integer("EVENTS_CONCURRENCY", d.concurrency, 1),
    )


def _worker(r: EnvReader, d: WorkerSettings) -> WorkerSettings:
    return WorkerSettings(
        queue_url=r.optional_string("PAYMENT_WEBHOOK_QUEUE_URL"),
        reservation_api_url=r.optional_url("RESERVATION_API_URL"),
        reservation_timeout_s=r.millis(
            "RESERVATION_API_TIMEOUT_MS", d.reservation_timeout_s, minimum=1
        ),
        http_host=r.string("WORKER_HTTP_HOST", d.http_host),
        http_port=r.port("WORKER_HTTP_PORT", d.http_port),
        pollers=r.integer("WORKER_POLLERS", d.pollers, 1),
        concurrency=r.integer("WORKER_CONCURRENCY", d.concurrency, 1),
        wait_time_s=r.integer("WORKER_WAIT_TIME_S", d.wait_time_s, 0),
        visibility_timeout_s=r.integer("WORKER_VISIBILITY_TIMEOUT_S", d.visibility_timeout_s, 0),
    )


def _log(r: EnvReader, d: LogSettings, *, production: bool) -> LogSettings:
    log_format = r.choice("LOG_FORMAT", LOG_FORMATS, "auto")
    return LogSettings(
        level=r.choice("LOG_LEVEL", LOG_LEVELS, d.level),
        json=log_format == "json" or (log_format == "auto" and production),
    )


def _store(r: EnvReader, d: StoreSettings, url: str | None) -> StoreSettings:
    return StoreSettings(
        url=url,
        password=r.optional_string("STORE_PASSWORD"),
        tls_ca_file=r.optional_string("STORE_TLS_CA_FILE"),
        key_prefix=r.key_prefix("STORE_KEY_PREFIX", d.key_prefix),
        lease_s=r.millis("STORE_LEASE_MS", d.lease_s, minimum=100),
        takeover_interval_s=r.millis(
            "STORE_TAKEOVER_INTERVAL_MS", d.takeover_interval_s, minimum=10
        ),
        replica_id=r.optional_string("REPLICA_ID"),
        timeout_s=r.millis("STORE_TIMEOUT_MS", d.timeout_s, minimum=1),
    )


def _check(settings: Settings) -> None:
    """Rules between settings, each naming the variable to change."""
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


def _chaos_seed(r: EnvReader) -> int | None:
    seed = r.optional_integer("CHAOS_SEED")
    return seed if seed is not None else r.optional_integer("SIMULATION_SEED")


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
    if settings.api_chaos.worker.url is not None:
        raise ConfigError("RECONCILIATION_WORKER_URL", "the report is not for production; unset it")
    if settings.api_chaos.active:
        raise ConfigError("CHAOS_API_*", "API fault injection is refused in production")
