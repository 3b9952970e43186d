"""The one owner of the process's Redis clients and of the stores built on them.

Every Redis client of the package is made here (a unit test greps ``src/`` for any
other), so each of these is decided once:

* **timeouts** -- by what the client is for, one row per ``Role`` in ``ROLES``, read from
  the settings;
* **retries** -- one retry after 10-100 ms: a connection cut by a server restart or an
  idle timeout is reopened at once, and a dead server costs milliseconds, not the ten
  growing retries of redis-py 8's default;
* **after a fork** -- the child forgets every client and store its parent made, without
  closing their sockets (they are the parent's), and builds its own on first use
  (``os.register_at_fork``, registered here once; prefork pool children rely on it);
* **the embedded default** -- no URL, ``memory://``, or no Celery broker for the job
  data: the stores use their in-process stand-ins instead of a client;
* **tests** -- ``reset()`` forgets everything built.

Stores take their client (or ``Connector``) in the constructor, as dramatiq's backends
take ``client=``, so a test may inject one; their ``get_*()`` accessors build the
process's one instance through ``shared`` and a client from here.
"""

from __future__ import annotations

import enum
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    import redis
    import redis.asyncio

T = TypeVar("T")

MEMORY_URL: Final = "memory://"
"""The in-process stand-in's URL (also what no URL means)."""
HEALTH_CHECK_INTERVAL: Final = 30
"""Seconds a pooled connection may idle before it is pinged on its next use."""
RETRY_BACKOFF: Final = (0.01, 0.1)
"""First and longest pause (s) before the one retry of a failed command."""


def is_memory(url: str | None) -> bool:
    """True when ``url`` selects the in-process stand-in rather than a Redis server."""
    return not url or url.startswith(MEMORY_URL)


# --- timeouts by role ------------------------------------------------------------------


class Role(enum.Enum):
    """What a client is for; it decides the client's timeouts (``ROLES``)."""

    CACHE = "cache"
    JOBS = "jobs"
    EVENTS = "events"


ROLES: Final[dict[Role, tuple[str, str]]] = {
    # role: (reply timeout, connect timeout), as names of settings. Three rows because
    # the waits a role can afford differ by orders of magnitude:
    # - the cache and the sessions answer in about a millisecond; past 1 s recomputing
    #   beats waiting, so the cache fails open and a session check fails fast;
    Role.CACHE: ("cache_socket_timeout", "cache_socket_timeout"),
    # - the job store, the outbox and the leases: one reply may carry a chunk's staged
    #   documents or a batch's tables (megabytes), and giving up early fails a job;
    Role.JOBS: ("redis_socket_timeout", "redis_connect_timeout"),
    # - the Redis Streams event broker waits for XADD like any broker for its confirm,
    #   and a reader's XREAD BLOCK must end before its socket times out.
    Role.EVENTS: ("events_publish_timeout", "redis_connect_timeout"),
}


@dataclass(frozen=True, slots=True)
class Timeouts:
    reply: float
    connect: float


def timeouts(role: Role, reply: float | None = None) -> Timeouts:
    """``role``'s timeouts from the settings; ``reply`` overrides the reply timeout (a
    connect never waits longer than a reply would)."""
    from redundancy.config import get_settings

    settings = get_settings()
    reply_setting, connect_setting = ROLES[role]
    reply = reply or float(getattr(settings, reply_setting))
    return Timeouts(reply, min(reply, float(getattr(settings, connect_setting))))


# --- the client factory ----------------------------------------------------------------


def _pool_options(
    url: str, role: Role, timeout: float | None, max_connections: int | None
) -> dict[str, Any]:
    if is_memory(url):
        raise ValueError(
            f"{url!r} selects the in-process stand-in, which has no Redis client "
            "(the store's accessor picks the stand-in)"
        )
    limits = timeouts(role, timeout)
    return {
        "socket_timeout": limits.reply,
        "socket_connect_timeout": limits.connect,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "max_connections": max_connections,
    }


def redis_client(
    url: str,
    role: Role,
    *,
    timeout: float | None = None,
    max_connections: int | None = None,
    decode_responses: bool = False,
) -> redis.Redis:
    """A new blocking client of ``url`` with its own pool (``max_connections``, default
    unbounded), ``role``'s timeouts (``timeout`` overrides the reply timeout) and one
    retry. The caller owns it; ``shared`` makes one per process."""
    import redis
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry

    retry = Retry(ExponentialWithJitterBackoff(*RETRY_BACKOFF), retries=1)
    options = _pool_options(url, role, timeout, max_connections)
    pool = redis.ConnectionPool.from_url(
        url, retry=retry, decode_responses=decode_responses, **options
    )
    return redis.Redis.from_pool(pool)  # the client owns its pool: close() closes both


def async_redis_client(
    url: str, role: Role, *, timeout: float | None = None, max_connections: int | None = None
) -> redis.asyncio.Redis:
    """``redis_client`` for asyncio (a client belongs to the event loop that uses it)."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    retry = Retry(ExponentialWithJitterBackoff(*RETRY_BACKOFF), retries=1)
    options = _pool_options(url, role, timeout, max_connections)
    pool = aioredis.ConnectionPool.from_url(url, retry=retry, **options)
    return aioredis.Redis.from_pool(pool)


def cluster_aware_client(url: str, role: Role) -> tuple[Any, bool]:
    """A client of ``url`` and whether it is a Redis Cluster: the server is asked
    (``INFO cluster``), so one URL form serves a single Redis and any node of a cluster
    (``redis.cluster.RedisCluster`` then, with the same timeouts and retry)."""
    single = redis_client(url, role)
    try:
        clustered = bool(single.info("cluster").get("cluster_enabled"))
    except Exception:
        single.close()
        raise
    if not clustered:
        return single, False
    single.close()
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    limits = timeouts(role)
    cluster = RedisCluster.from_url(
        url,
        socket_timeout=limits.reply,
        socket_connect_timeout=limits.connect,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        retry=Retry(ExponentialWithJitterBackoff(*RETRY_BACKOFF), retries=1),
    )
    return cluster, True


# --- the process's shared instances, forgotten after a fork ----------------------------

_lock = threading.RLock()  # reentrant: a builder may ask for another shared instance
_built: dict[str, Any] = {}
_FORK_AWARE: weakref.WeakSet[Any] = weakref.WeakSet()


def shared(name: str, build: Callable[[], T]) -> T:
    """The process's one ``name``, made by ``build()`` on first use; ``reset()``,
    ``forget(name)`` and a fork (in the child) make the next call build it again."""
    found = _built.get(name)
    if found is None:
        with _lock:
            found = _built.get(name)
            if found is None:
                found = _built[name] = build()
    return found


def built(name: str) -> Any:
    """The process's ``name`` if it was built, else None (never builds it)."""
    return _built.get(name)


def forget(name: str) -> None:
    """The next ``shared(name, ...)`` builds anew (after a settings change; tests).
    Nothing is closed: whoever still holds the old instance may go on using it."""
    with _lock:
        _built.pop(name, None)


def reset() -> None:
    """Forget every shared client and store (tests; after a settings change)."""
    with _lock:
        _built.clear()


def reset_after_fork(obj: Any) -> None:
    """Call ``obj._after_fork()`` in the child of every fork, for objects that outlive
    a fork but keep per-process state (a ``Connector``'s clients, the cache counters)."""
    _FORK_AWARE.add(obj)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()  # another thread may have held it at the fork
    _built.clear()
    for obj in list(_FORK_AWARE):
        obj._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- the job data's Redis: the embedded default decided here ---------------------------


def jobs_url() -> str | None:
    """The job store's Redis (the result backend's, run without eviction), or None on the
    embedded default, where jobs run in this process and so do their stores."""
    from redundancy.config import get_settings

    settings = get_settings()
    url = settings.job_store_url
    return None if settings.embedded or is_memory(url) else url


def jobs_client() -> redis.Redis | None:
    """The process's client of ``jobs_url()``, shared by the job store and the outbox;
    None on the embedded default (they use their in-process stand-ins)."""
    url = jobs_url()
    if url is None:
        return None
    return shared(f"redis:jobs:{url}", lambda: redis_client(url, Role.JOBS))
