"""A producer command's side of the cluster: one clear line instead of a hang or a
traceback.

Before a command sends work to Celery it checks, within a few seconds, that the broker
answers and that some worker does (``ping``); a service that fails later (the result
backend, the job store) is named in one line too (``infrastructure_problem``).
"""

from __future__ import annotations

import sys
from typing import Any

from redundancy.errors import InfrastructureError
from redundancy.kv.clients import sanitize

BROKER_CONNECT_TIMEOUT = 5.0
"""Seconds to reach the broker before a command gives up."""
WORKER_PING_TIMEOUT = 3.0
"""Seconds to wait for a worker's ``pong`` (the first one ends the wait)."""


class ClusterUnavailableError(InfrastructureError):
    """The broker does not answer, or no worker does."""


def ensure_cluster(app: Any) -> None:
    """Raise ClusterUnavailableError unless the broker answers and a worker replies."""
    url = sanitize(str(app.conf.broker_url))
    try:
        with app.connection_for_write(connect_timeout=BROKER_CONNECT_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_CONNECT_TIMEOUT)
    except Exception as exc:
        raise ClusterUnavailableError(f"cannot reach the broker at {url}: {_reason(exc)}") from None
    if not app.conf.worker_enable_remote_control:
        return  # workers would not answer a ping: nothing to check
    try:
        replies = app.control.ping(timeout=WORKER_PING_TIMEOUT, limit=1)
    except Exception as exc:
        raise ClusterUnavailableError(f"cannot ask for workers at {url}: {_reason(exc)}") from None
    if not replies:
        raise ClusterUnavailableError(
            f"no worker answered within {WORKER_PING_TIMEOUT:g} s at {url}: start one with "
            "`crd worker` (or `celery -A redundancy.workers worker`)"
        )


def infrastructure_problem(exc: BaseException) -> str | None:
    """One line naming the service behind a connection error of kombu, redis-py or the
    OS; None for anything else. Only libraries already imported can have raised."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    kombu = sys.modules.get("kombu.exceptions")
    if kombu is not None:
        kinds.append(kombu.OperationalError)
    redis = sys.modules.get("redis.exceptions")
    if redis is not None:
        kinds += [redis.ConnectionError, redis.TimeoutError]
    if not isinstance(exc, tuple(kinds)):
        return None
    return f"a service is unreachable: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    """``Type: first line of the message`` (a traceback never reaches the terminal)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
