"""Typed settings from the environment (names from the original service, DESIGN §5).

``get_settings()`` reads the environment once per process; a bad value raises
``ConfigurationError`` naming the variable and what was expected. An unset
``CELERY_BROKER_URL`` selects the embedded default: jobs run in-process on in-memory
stand-ins, with no server needed.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from redundancy.errors import ConfigurationError

BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "memory")
REDIS_SCHEMES = ("redis", "rediss", "unix")
EventBrokerType = Literal["redis_streams", "rabbitmq", "kafka", "memory"]


def _check_scheme(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    if value is None or value == "":
        return None
    scheme = urlsplit(value).scheme
    if scheme not in allowed:
        close = difflib.get_close_matches(scheme, allowed, n=1)
        hint = f" (did you mean {close[0]}://?)" if close else ""
        raise ValueError(f"expected a {what} URL ({'|'.join(allowed)}://...), got {value!r}{hint}")
    return value


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
        default=None, gt=0, description="Redis broker redelivery delay (s); must exceed TASK_TIME_LIMIT"
    )
    task_time_limit: int = Field(default=600, gt=0, description="hard per-task limit (s)")
    task_soft_time_limit: int = Field(default=540, gt=0, description="soft per-task limit (s)")
    task_max_retries: int = Field(default=5, ge=0)
    max_deliveries: int = Field(
        default=5, ge=1, description="deliveries of one task message before it is poison"
    )
    worker_concurrency: int | None = Field(default=None, gt=0)

    # Other services.
    message_broker_type: EventBrokerType | None = None
    redis_url: str | None = None
    rabbitmq_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    redis_cache_url: str | None = None
    cache_default_ttl: int = Field(default=3600, gt=0)
    cache_max_connections: int = Field(default=50, gt=0)
    otel_exporter_otlp_endpoint: str | None = None
    service_name: str = "content-redundancy-detector"

    # Work limits.
    max_text_chars: int = Field(default=1_000_000, gt=0)
    batch_chunk_size: int = Field(
        default=500, gt=0, description="documents per batch sub-task (analysis and pair shards)"
    )
    batch_ttl: int = Field(default=86_400, gt=0, description="lifetime of staged batch documents (s)")

    # --- Events, outbox and webhooks (issue 3) ---

    # --- Cache and sessions (issue 4) ---

    # --- Observability: metrics, tracing, logs, Flower (issue 5) ---

    # --- Near-duplicate search modes (issue 6) ---
    lsh_bucket_records: int = Field(
        default=2_000_000, ge=10_000,
        description="LSH band records (12 bytes each) one bucket task holds at most; sets "
        "how many bucket tasks an indexed batch gets",
    )
    lsh_verify_pairs: int = Field(
        default=20_000, ge=100,
        description="candidate pairs an indexed batch's verify task loads texts for at once",
    )

    @field_validator("celery_broker_url")
    @classmethod
    def _broker(cls, v: str | None) -> str | None:
        return _check_scheme(v, BROKER_SCHEMES, "Celery broker")

    @field_validator("celery_result_backend", "redis_url", "redis_cache_url")
    @classmethod
    def _redis(cls, v: str | None) -> str | None:
        return _check_scheme(v, REDIS_SCHEMES, "Redis")

    @field_validator("rabbitmq_url")
    @classmethod
    def _amqp(cls, v: str | None) -> str | None:
        return _check_scheme(v, ("amqp", "amqps"), "RabbitMQ")

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
        unlike the cache's.
        """
        backend = self.result_backend_url
        if backend and urlsplit(backend).scheme in REDIS_SCHEMES:
            return backend
        return None

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
            shown = "" if "got " in msg or isinstance(got, dict) else f" (got {got!r})"
            problems.append(f"{loc or 'settings'}: {msg}{shown}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return load_settings()


__all__ = ["RETRY_BACKOFF_MAX", "Settings", "get_settings", "load_settings"]
