"""``crd serve``: uvicorn running ``create_api`` in one or more worker processes.

Metrics are correct with several workers: before anything imports prometheus_client,
this process points it at a fresh multiprocess folder (``METRICS_DIR/<pid>``, the same
mechanism as a Celery worker's, ``redundancy.observability.multiproc``); every uvicorn
worker inherits the folder and writes its own files, and ``/metrics`` in any of them
sums every worker's. The folder is removed when the server exits.
"""

from __future__ import annotations

from redundancy.config import Settings
from redundancy.errors import ConfigurationError


def check_can_serve(settings: Settings) -> None:
    """The gateway needs a broker (jobs run on workers) and a shared Redis (keys,
    sessions, limits must be the same for every API process and for ``crd keys``)."""
    if settings.embedded:
        raise ConfigurationError(
            "CELERY_BROKER_URL is not set: the API sends jobs to workers (`crd worker`). "
            "Set it to redis://... or amqp://..."
        )
    if not settings.sessions_url:
        raise ConfigurationError(
            "REDIS_URL is not set: API keys, sessions and rate limits live there, shared "
            "by every API process and by `crd keys`"
        )


def serve(
    host: str,
    port: int,
    workers: int,
    *,
    settings: Settings,
    forwarded_allow_ips: str | None = None,
) -> None:
    from redundancy.observability.multiproc import enable_multiprocess

    check_can_serve(settings)
    enable_multiprocess(settings.metrics_dir)  # before prometheus_client is imported
    import uvicorn

    uvicorn.run(
        "redundancy.api:create_api",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,  # ours is one line per request with the correlation id
        log_config=None,  # the app configures logging (LOG_FORMAT) in every worker
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        timeout_graceful_shutdown=10,
    )
