"""Typed settings from the environment, under the original service's names.

``get_settings()`` reads the environment once per process; a bad value raises
``ConfigurationError`` naming the variable and what was expected. An unset
``CELERY_BROKER_URL`` selects the embedded default: jobs run in-process on in-memory
stand-ins, with no server needed.
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from redundancy.core.cost import DEFAULT_MAX_WORK_SECONDS
from redundancy.core.duplicates import DEFAULT_MAX_EXPANDED_PAIRS
from redundancy.errors import ConfigurationError

BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "memory")
REDIS_SCHEMES = ("redis", "rediss", "unix")
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
EventBrokerType = Literal["redis_streams", "rabbitmq", "kafka", "memory"]
EventStoreType = Literal["redis", "kafka"]


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _secret_bytes(value: str) -> bytes:
    """A webhook secret's key bytes: ``whsec_<base64>`` (Standard Webhooks) decoded, else
    the text as UTF-8."""
    if not value.startswith("whsec_"):
        return value.encode()
    try:
        return base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except ValueError:
        raise ValueError("a whsec_ secret must be base64 after the prefix") from None


def _keys(
    current: SecretStr | None, previous: SecretStr | None, *, bytes_of: Callable[[str], bytes]
) -> tuple[bytes, ...]:
    """The current key first, then the ones being rotated out (comma-separated)."""
    texts = [current.get_secret_value()] if current else []
    texts += _split(previous.get_secret_value()) if previous else []
    return tuple(dict.fromkeys(bytes_of(t) for t in texts if t))


SECRET_WORDS = ("KEY", "SECRET", "AUTH", "PASSWORD", "TOKEN", "SUBSCRIPTIONS")
"""A setting whose name holds one of these is never echoed in an error (webhook URLs
often carry a token)."""


def redact(value: object) -> str:
    """``repr`` of a setting's value for an error message, with a URL's password hidden."""
    text = str(value)
    try:
        parts = urlsplit(text)
    except ValueError:
        return repr(value)
    if parts.password:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return repr(parts._replace(netloc=f"{user}{host}{port}").geturl())
    return repr(value)


def _check_scheme(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    if value is None or value == "":
        return None
    scheme = urlsplit(value).scheme
    if scheme not in allowed:
        close = difflib.get_close_matches(scheme, allowed, n=1)
        hint = f" (did you mean {close[0]}://?)" if close else ""
        raise ValueError(
            f"expected a {what} URL ({'|'.join(allowed)}://...), got {redact(value)}{hint}"
        )
    return value


class WebhookSubscription(BaseModel):
    """One entry of WEBHOOK_SUBSCRIPTIONS: where the webhook notifier POSTs which events."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    events: tuple[str, ...] = Field(
        min_length=1, description='event types ("analysis.completed", ...) or "*" for all'
    )

    @field_validator("events")
    @classmethod
    def _names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if name != "*" and not re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+", name):
                raise ValueError(f"{name!r} is not an event type such as analysis.completed")
        return v


_SUBSCRIPTIONS = TypeAdapter(tuple[WebhookSubscription, ...])


class Settings(BaseSettings):
    """Every setting, read from environment variables of the same name (upper case)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # Celery transport and result store.
    celery_broker_url: str | None = Field(
        default=None, description="redis://... or amqp://...; unset = embedded default"
    )
    celery_result_backend: str | None = Field(
        default=None, description="redis://...; defaults to a Redis broker URL or REDIS_URL"
    )
    celery_visibility_timeout: int | None = Field(
        default=None,
        gt=0,
        description="Redis broker redelivery delay (s); must exceed TASK_TIME_LIMIT",
    )
    task_time_limit: int = Field(default=600, gt=0, description="hard per-task limit (s)")
    task_soft_time_limit: int = Field(default=540, gt=0, description="soft per-task limit (s)")
    task_time_base: float = Field(
        default=10.0,
        gt=0,
        description="hard limit of analyze_content/compare_texts before input size (s)",
    )
    task_time_per_mchar: float = Field(
        default=120.0,
        ge=0,
        description="hard limit added per million characters of their input text (s)",
    )
    task_max_retries: int = Field(default=5, ge=0)
    max_deliveries: int = Field(
        default=5, ge=1, description="deliveries of one task message before it is poison"
    )
    worker_concurrency: int | None = Field(default=None, gt=0)
    worker_prefetch_multiplier: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="messages each pool process keeps in hand (unset: 4 on a worker of only "
        "the analysis/similarity queues, else 1)",
    )
    task_queue_dead_lettering: bool = Field(
        default=True,
        description="declare the task queues with a dead-letter exchange (RabbitMQ); false "
        "for queues an older version declared (use a policy instead, README Security)",
    )

    # Other services.
    message_broker_type: EventBrokerType | None = None
    redis_url: str | None = None
    rabbitmq_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    redis_cache_url: str | None = None
    redis_socket_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="reply timeout of the job store, outbox and lease Redis (s)",
    )
    redis_connect_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="connect timeout of those and of the Redis Streams event broker (s)",
    )
    cache_default_ttl: int = Field(default=3600, gt=0)
    cache_max_connections: int = Field(default=50, gt=0)
    otel_exporter_otlp_endpoint: str | None = None
    service_name: str = "content-redundancy-detector"

    # Work limits.
    max_text_chars: int = Field(default=1_000_000, gt=0)
    max_work_seconds: float = Field(
        default=DEFAULT_MAX_WORK_SECONDS,
        gt=0,
        description="estimated CPU seconds one analysis or comparison may cost; costlier "
        "input is refused before scoring (redundancy.core.cost)",
    )
    batch_chunk_size: int = Field(
        default=500, gt=0, description="documents per batch sub-task (analysis and pair shards)"
    )
    batch_ttl: int = Field(
        default=86_400, gt=0, description="lifetime of staged batch documents (s)"
    )
    expand_identical_max_pairs: int = Field(
        default=DEFAULT_MAX_EXPANDED_PAIRS,
        ge=0,
        description="document pairs a result expanded on request (expand_identical) lists "
        "at most; duplicate groups always list every copy",
    )

    # --- Events, outbox and webhooks ---
    events_enabled: bool = Field(
        default=True, description="turn finished jobs into domain events (outbox + relay)"
    )
    events_topic: str = Field(
        default="redundancy.events",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$",
        description="Kafka topic, RabbitMQ exchange and Redis stream name of the events",
    )
    events_signing_key: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key: producers sign every event, consumers verify with it",
    )
    events_signing_keys_previous: SecretStr | None = Field(
        default=None,
        description="comma-separated keys being rotated out: events are signed with these "
        "too and verified with any",
    )
    events_stream_maxlen: int = Field(
        default=100_000, gt=0, description="Redis Streams: approximate MAXLEN of the stream"
    )
    events_kafka_partitions: int = Field(
        default=6, gt=0, description="partitions of the topic when the broker creates it"
    )
    events_kafka_replication: int = Field(
        default=-1, ge=-1, description="replication factor of a new topic (-1: broker default)"
    )
    events_publish_timeout: float = Field(
        default=15.0, gt=0, description="longest wait for the event broker to confirm (s)"
    )
    events_relay_in_worker: bool = Field(
        default=True, description="every worker starts an outbox relay process beside it"
    )
    events_relay_batch: int = Field(
        default=500, gt=0, le=10_000, description="outbox entries relayed per round trip"
    )
    events_relay_window: int = Field(
        default=4,
        gt=0,
        le=64,
        description="batches the relay keeps in flight on a broker that confirms "
        "asynchronously (Kafka); 1 waits for each batch",
    )
    events_relay_retry_max: float = Field(
        default=30.0, gt=0, description="longest back-off between relay attempts (s)"
    )
    events_relay_lease_ttl: float = Field(
        default=40.0,
        gt=0,
        description="relay leadership lease (s); above twice (EVENTS_PUBLISH_TIMEOUT + 1)",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key of webhook-signature (raw text, or whsec_<base64>)",
    )
    webhook_secrets_previous: SecretStr | None = Field(
        default=None,
        description="comma-separated secrets being rotated out: webhooks are signed with these too",
    )
    webhook_allowed_ports: str = Field(
        default="80,443",
        description="comma-separated ports a webhook URL may name (every target, allow-listed "
        "or not)",
    )
    webhook_allowed_hosts: str = Field(
        default="",
        description="comma-separated hosts, IPs or CIDRs a webhook may target "
        "even though they are loopback or private",
    )
    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    webhook_timeout: float = Field(default=10.0, gt=0, description="per attempt (s)")
    webhook_backoff: float = Field(
        default=2.0, ge=0, description="first retry delay (s); doubles per attempt, with jitter"
    )
    webhook_subscriptions: str = Field(
        default="",
        description='JSON list of {"url": ..., "events": [...]}: the webhook notifier event '
        "handler POSTs each of those events to the URL",
    )

    # --- Event handlers (crd events handle) ---
    events_handler_max_tries: int = Field(
        default=5, ge=1, le=100, description="tries of a handler (unless it names its own)"
    )
    events_handler_lease: float = Field(
        default=60.0,
        gt=0,
        description="how long one try may run before another process may take the event over (s)",
    )
    events_handler_done_ttl: int = Field(
        default=7 * 86_400,
        gt=0,
        description="how long a handled event id is remembered across processes (s)",
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _kafka(cls, v: str | None) -> str | None:
        if not v:
            return None
        servers = [s.strip() for s in v.removeprefix("kafka://").split(",")]
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {v!r}")
        return ",".join(servers)

    @field_validator("webhook_secret", "webhook_secrets_previous")
    @classmethod
    def _webhook_secrets(cls, v: SecretStr | None) -> SecretStr | None:
        for entry in _split(v.get_secret_value()) if v else ():
            _secret_bytes(entry)
        return v

    @field_validator("webhook_subscriptions")
    @classmethod
    def _subscriptions(cls, v: str) -> str:
        if v.strip():
            try:
                _SUBSCRIPTIONS.validate_json(v)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(
                    'expected a JSON list of {"url": "https://...", "events": ["type", ...]}: '
                    f"{where + ': ' if where else ''}{first['msg']}"
                ) from None
        return v

    @field_validator("webhook_allowed_ports")
    @classmethod
    def _ports(cls, v: str) -> str:
        for entry in _split(v):
            if not entry.isdigit() or not 1 <= int(entry) <= 65535:
                raise ValueError(f"expected ports 1..65535, comma-separated, got {entry!r}")
        return v

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _allow_list(cls, v: str) -> str:
        for entry in _split(v):
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not a CIDR network") from None
        return v

    @model_validator(mode="after")
    def _event_broker(self) -> Settings:
        needs = {
            "rabbitmq": ("rabbitmq_url", "RABBITMQ_URL"),
            "kafka": ("kafka_bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS"),
        }
        if self.events_enabled and self.message_broker_type in needs:
            field, variable = needs[self.message_broker_type]
            if not getattr(self, field):
                raise ValueError(f"MESSAGE_BROKER_TYPE={self.message_broker_type} needs {variable}")
        if self.events_relay_lease_ttl <= 2 * (self.events_publish_timeout + 1):
            raise ValueError(
                "EVENTS_RELAY_LEASE_TTL must exceed twice (EVENTS_PUBLISH_TIMEOUT + 1 s), or a "
                "relay may lose its lease while it waits for the broker "
                f"({self.events_relay_lease_ttl} <= 2 * ({self.events_publish_timeout} + 1))"
            )
        if self.event_store == "kafka" and not self.kafka_bootstrap_servers:
            raise ValueError("EVENT_STORE=kafka needs KAFKA_BOOTSTRAP_SERVERS")
        if (
            self.events_enabled
            and self.message_broker_type == "redis_streams"
            and not (self.redis_url or self.job_store_url)
        ):
            raise ValueError("MESSAGE_BROKER_TYPE=redis_streams needs REDIS_URL")
        return self

    @property
    def events_signing_keys(self) -> tuple[bytes, ...]:
        """EVENTS_SIGNING_KEY, then EVENTS_SIGNING_KEYS_PREVIOUS, as bytes (none: ())."""
        return _keys(
            self.events_signing_key, self.events_signing_keys_previous, bytes_of=str.encode
        )

    @property
    def webhook_secrets(self) -> tuple[bytes, ...]:
        """WEBHOOK_SECRET, then WEBHOOK_SECRETS_PREVIOUS, as key bytes (``whsec_<base64>``
        decoded, as Standard Webhooks libraries read it; other text as UTF-8)."""
        return _keys(self.webhook_secret, self.webhook_secrets_previous, bytes_of=_secret_bytes)

    @property
    def webhook_subscription_list(self) -> tuple[WebhookSubscription, ...]:
        """WEBHOOK_SUBSCRIPTIONS, parsed (validated when the settings were read)."""
        return _SUBSCRIPTIONS.validate_json(self.webhook_subscriptions or "[]")

    @property
    def handler_state_url(self) -> str | None:
        """Where event handlers keep claims and dead letters: REDIS_URL, else the result
        backend's Redis."""
        return self.redis_url or self.job_store_url

    @property
    def webhook_ports(self) -> frozenset[int]:
        """WEBHOOK_ALLOWED_PORTS as numbers."""
        return frozenset(int(p) for p in _split(self.webhook_allowed_ports))

    @property
    def webhook_allow_list(self) -> tuple[str, ...]:
        """WEBHOOK_ALLOWED_HOSTS as entries (hosts, IPs, CIDRs), lower case."""
        return tuple(e.lower() for e in _split(self.webhook_allowed_hosts))

    # --- Cache and sessions ---
    cache_results: bool = Field(
        default=True, description="analyze_content/compare_texts look up and store results"
    )
    cache_socket_timeout: float = Field(
        default=1.0, gt=0, le=60, description="connect/reply timeout, cache and sessions Redis (s)"
    )
    cache_retry_after: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="after a cache connection error, skip the cache this long (s; counted)",
    )
    cache_lock_timeout: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="get_or_set: lifetime of the compute-once lock; waiters give up after it (s)",
    )
    cache_memory_max_keys: int = Field(
        default=1000, gt=0, description="keys the in-memory cache twin keeps (LRU)"
    )
    session_default_ttl: int = Field(default=3600, gt=0, description="idle timeout (s)")
    session_max_ttl: int = Field(
        default=86_400, gt=0, description="largest idle timeout a caller may ask for (s)"
    )
    session_max_lifetime: int = Field(
        default=7 * 86_400, gt=0, description="absolute lifetime; sliding refresh stops here (s)"
    )
    session_bind_ip: bool = Field(
        default=False, description="sessions refuse lookups from another IP than the creator's"
    )
    session_max_jobs: int = Field(default=1000, gt=0, description="job ids kept per session")

    # --- Observability: metrics, tracing, logs, Flower ---
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="the worker main process serves Prometheus /metrics on this port",
    )
    metrics_bind_address: str = Field(
        default="0.0.0.0", description="address the worker's /metrics endpoint binds"
    )
    metrics_dir: str | None = Field(
        default=None,
        description="base folder of the per-worker prometheus multiprocess folders (default: temp)",
    )
    metrics_interval: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="seconds between queue-length probes and metric-file compaction in a worker",
    )
    prometheus_pushgateway: str | None = Field(
        default=None, description="http(s)://... a Pushgateway the crd CLI pushes its counters to"
    )
    log_format: LogFormat = Field(
        default="text", description="text (Celery's format) or json (one object per line)"
    )
    flower_basic_auth: str | None = Field(
        default=None, description="user:password[,user:password] for crd flower (read by Flower)"
    )
    task_args_preview_words: int = Field(
        default=0,
        ge=0,
        le=50,
        description="Flower and task events show this many first words of a text argument "
        "(0: only its length and hash)",
    )

    # --- Near-duplicate search modes ---
    lsh_bucket_records: int = Field(
        default=2_000_000,
        ge=10_000,
        description="LSH band records (12 bytes each) one bucket task holds at most; sets "
        "how many bucket tasks an indexed batch gets",
    )
    lsh_verify_pairs: int = Field(
        default=20_000,
        ge=100,
        description="candidate pairs an indexed batch's verify task loads texts for at once",
    )

    # --- HTTP API gateway (redundancy.api; README "HTTP API") ---
    api_host: str = Field(default="127.0.0.1", description="address crd serve binds")
    api_port: int = Field(default=8000, ge=1, le=65535, description="port crd serve binds")
    api_workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    api_rate_limit: float = Field(
        default=10.0, gt=0, description="requests per second each API key may make (GCRA)"
    )
    api_rate_burst: int = Field(
        default=20, ge=1, description="requests an idle key may make at once above the rate"
    )
    api_quota_documents: int = Field(
        default=100_000, ge=1, description="documents each API key may submit per UTC day"
    )
    api_quota_bytes: int = Field(
        default=1 << 30, ge=1, description="bytes of text each API key may submit per UTC day"
    )
    api_max_body_bytes: int = Field(
        default=256 << 20, ge=1024, description="largest request body (413 above)"
    )
    api_max_json_bytes: int = Field(
        default=16 << 20,
        ge=1024,
        description="largest body parsed in memory (JSON); JSONL and uploads stream",
    )
    api_max_batch_documents: int = Field(
        default=100_000, ge=1, description="documents one batch request may hold (413 above)"
    )
    api_max_corpus_documents: int = Field(
        default=10_000,
        ge=1,
        description="documents one corpus indexing request may hold (one task; 413 above)",
    )
    api_max_wait: float = Field(
        default=30.0, ge=0, le=300, description="longest ?wait= a request may ask for (s)"
    )

    # --- Corpora: event store and index (redundancy.corpus; README "Corpora") ---
    corpus_redis_url: str | None = Field(
        default=None,
        description="Redis (or a Redis Cluster node) of the corpora; default REDIS_URL",
    )
    event_store: EventStoreType = Field(
        default="redis",
        description="a corpus's event store: redis (a stream per shard, never trimmed) or "
        "kafka (a topic per corpus, unlimited retention, KAFKA_BOOTSTRAP_SERVERS)",
    )
    corpus_kafka_topic_prefix: str = Field(
        default="redundancy.corpus.",
        pattern=r"^[A-Za-z0-9._-]{0,100}$",
        description="EVENT_STORE=kafka: a corpus's topic is this prefix plus its name",
    )
    corpus_apply_batch: int = Field(
        default=500,
        gt=0,
        le=10_000,
        description="events a projector applies per atomic step (catch-up and rebuild)",
    )
    corpus_publish_events: bool = Field(
        default=True,
        description="also put a corpus's events on the event bus (outbox, relay) for event "
        "handlers; its store holds them either way",
    )

    @field_validator("celery_broker_url")
    @classmethod
    def _broker(cls, v: str | None) -> str | None:
        return _check_scheme(v, BROKER_SCHEMES, "Celery broker")

    @field_validator("celery_result_backend", "redis_url", "redis_cache_url", "corpus_redis_url")
    @classmethod
    def _redis(cls, v: str | None) -> str | None:
        return _check_scheme(v, REDIS_SCHEMES, "Redis")

    @field_validator("rabbitmq_url")
    @classmethod
    def _amqp(cls, v: str | None) -> str | None:
        return _check_scheme(v, ("amqp", "amqps"), "RabbitMQ")

    @field_validator("otel_exporter_otlp_endpoint", "prometheus_pushgateway")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        return _check_scheme(v, ("http", "https"), "HTTP")

    @field_validator("flower_basic_auth")
    @classmethod
    def _credentials(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        for pair in v.split(","):
            user, _, password = pair.partition(":")
            if not user or not password:
                raise ValueError("expected user:password[,user:password] (got a malformed entry)")
        return v

    @model_validator(mode="after")
    def _limits(self) -> Settings:
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError(
                "TASK_SOFT_TIME_LIMIT must be below TASK_TIME_LIMIT "
                f"({self.task_soft_time_limit} >= {self.task_time_limit})"
            )
        if (
            self.celery_visibility_timeout is not None
            and self.celery_visibility_timeout <= self.task_time_limit
        ):
            raise ValueError(
                "CELERY_VISIBILITY_TIMEOUT must exceed TASK_TIME_LIMIT, or a running task is "
                f"delivered twice ({self.celery_visibility_timeout} <= {self.task_time_limit})"
            )
        if not self.session_default_ttl <= self.session_max_ttl <= self.session_max_lifetime:
            raise ValueError(
                "expected SESSION_DEFAULT_TTL <= SESSION_MAX_TTL <= SESSION_MAX_LIFETIME, got "
                f"{self.session_default_ttl}, {self.session_max_ttl}, {self.session_max_lifetime}"
            )
        if self.api_max_json_bytes > self.api_max_body_bytes:
            raise ValueError(
                "API_MAX_JSON_BYTES must not exceed API_MAX_BODY_BYTES "
                f"({self.api_max_json_bytes} > {self.api_max_body_bytes})"
            )
        if not self.embedded and not self.result_backend_url:
            raise ValueError(
                "CELERY_RESULT_BACKEND is required when CELERY_BROKER_URL is not Redis "
                "(set it, or REDIS_URL, to redis://...)"
            )
        return self

    @property
    def embedded(self) -> bool:
        """True when no broker (or ``memory://``) is configured: jobs run in-process."""
        return self.celery_broker_url is None or self.celery_broker_url.startswith("memory:")

    def require_broker(self, needed_by: str) -> None:
        """Refuse, naming the variable, to start what only a cluster runs (a worker, Flower,
        the relay) on the embedded default (docs/architecture.md §5); ``needed_by``
        completes the message."""
        if self.embedded:
            raise ConfigurationError(f"CELERY_BROKER_URL is not set: {needed_by}")

    @property
    def broker_url(self) -> str | None:
        return self.celery_broker_url

    @property
    def result_backend_url(self) -> str | None:
        """CELERY_RESULT_BACKEND, else a Redis broker's URL, else REDIS_URL."""
        if self.celery_result_backend:
            return self.celery_result_backend
        broker = self.celery_broker_url
        if broker and urlsplit(broker).scheme in REDIS_SCHEMES:
            return broker
        return self.redis_url

    @property
    def job_store_url(self) -> str | None:
        """Redis for job data (staged batch documents, delivery counters).

        The result backend's Redis: in production it is persistent and never evicts,
        unlike the cache's. (Validation keeps the result backend on Redis.)
        """
        return self.result_backend_url

    @property
    def cache_url(self) -> str | None:
        """REDIS_CACHE_URL, else REDIS_URL; None = the in-memory twin (per process)."""
        return self.redis_cache_url or self.redis_url

    @property
    def sessions_url(self) -> str | None:
        """REDIS_URL; None = the in-memory twin (embedded default, one process)."""
        return self.redis_url

    @property
    def corpus_redis(self) -> str | None:
        """CORPUS_REDIS_URL, else REDIS_URL: where corpora (index and Redis store) live."""
        return self.corpus_redis_url or self.redis_url

    @property
    def visibility_timeout(self) -> int:
        """Explicit value, else the hard limit plus the longest retry back-off, doubled."""
        if self.celery_visibility_timeout is not None:
            return self.celery_visibility_timeout
        return 2 * (self.task_time_limit + RETRY_BACKOFF_MAX)

    @property
    def cdist_workers(self) -> int:
        """rapidfuzz threads: every core in-process, 1 per prefork child (one layer)."""
        return -1 if self.embedded else 1


RETRY_BACKOFF_MAX = 300
"""Longest back-off between retries of an infrastructure error (s)."""


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning validation errors into one readable ConfigurationError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]).upper()
            msg = str(err["msg"]).removeprefix("Value error, ")
            got = err.get("input")
            secret = any(word in loc for word in SECRET_WORDS)
            hidden = "got " in msg or isinstance(got, dict) or secret
            shown = "" if hidden else f" (got {redact(got)})"
            problems.append(f"{loc or 'settings'}: {msg}{shown}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment -- with ``broker_url`` and
    ``result_backend`` of the module named by ``CELERY_CONFIG_MODULE``, if any, in place
    of ``CELERY_BROKER_URL`` / ``CELERY_RESULT_BACKEND`` (see ``config.overrides``)."""
    from redundancy.config.overrides import OVERRIDE_ENV, override_name, settings_fields

    from_module = settings_fields()
    try:
        return load_settings(**from_module)
    except ConfigurationError as exc:
        if not from_module:
            raise
        raise ConfigurationError(
            f"{exc} (CELERY_BROKER_URL / CELERY_RESULT_BACKEND here are broker_url / "
            f"result_backend of {OVERRIDE_ENV}={override_name()})"
        ) from None


__all__ = [
    "RETRY_BACKOFF_MAX",
    "Settings",
    "WebhookSubscription",
    "get_settings",
    "load_settings",
]
