"""The two faces of the cache: ``RedisCache`` (async, the original API) and
``SyncRedisCache`` (what workers use). Both run the flows of one ``CacheCore``."""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Callable
from typing import Any

from redundancy import keys, resources
from redundancy.cache.core import MISS, SCAN_BATCH, CacheCore, EarlyLookup, StoreLater
from redundancy.kv.clients import Connector
from redundancy.kv.memory import MemoryStore
from redundancy.kv.ops import run_async, run_sync


def _build_core(
    redis_url: str | None,
    default_ttl: float | None,
    max_connections: int | None,
    *,
    namespace: str,
    lock_timeout: float | None,
    retry_after: float | None,
    socket_timeout: float | None,
    fail_open: bool,
    connector: Connector | None,
) -> CacheCore:
    """Unset arguments come from the settings (``REDIS_CACHE_URL``, ``CACHE_*``)."""
    from redundancy.config import get_settings

    s = get_settings()
    connector = connector or Connector(
        redis_url or s.cache_url,
        max_connections=max_connections or s.cache_max_connections,
        socket_timeout=socket_timeout,
        memory=MemoryStore(max_keys=s.cache_memory_max_keys),
    )
    return CacheCore(
        connector,
        default_ttl=default_ttl or s.cache_default_ttl,
        namespace=namespace,
        lock_timeout=lock_timeout or s.cache_lock_timeout,
        retry_after=s.cache_retry_after if retry_after is None else retry_after,
        fail_open=fail_open,
    )


class _Face:
    def __init__(
        self,
        redis_url: str | None = None,
        default_ttl: float | None = None,
        max_connections: int | None = None,
        *,
        namespace: str = keys.CACHE_PREFIX,
        lock_timeout: float | None = None,
        retry_after: float | None = None,
        socket_timeout: float | None = None,
        fail_open: bool = True,
        connector: Connector | None = None,
        core: CacheCore | None = None,
    ) -> None:
        self.core = core or _build_core(
            redis_url,
            default_ttl,
            max_connections,
            namespace=namespace,
            lock_timeout=lock_timeout,
            retry_after=retry_after,
            socket_timeout=socket_timeout,
            fail_open=fail_open,
            connector=connector,
        )

    @property
    def url(self) -> str:
        """Where the entries live (password hidden), or the in-memory twin."""
        return self.core.connector.describe()

    @property
    def default_ttl(self) -> float:
        return self.core.default_ttl

    def stats(self) -> dict[str, Any]:
        """This instance's counts since it was made (exact): ``hits``, ``misses``,
        ``errors``, ``sets``, ``deletes``, ``hit_rate`` and the same per namespace (the
        key's first ``:`` segment) under ``namespaces``."""
        return self.core.book.snapshot()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} namespace={self.core.namespace!r}>"


class RedisCache(_Face):
    """A namespaced JSON cache on Redis, async (the original service's API).

        cache = RedisCache(redis_url="redis://localhost:6379/2", default_ttl=3600)
        await cache.set("analysis:abc", {"score": 0.5}, ttl=600)
        await cache.get("analysis:abc")                      # {"score": 0.5}
        await cache.get_or_set("analysis:def", compute)      # compute once, then cached
        await cache.delete_pattern("analysis:*", prefix="cache")

    Keys live at ``redundancy:<prefix>:v1:<key>`` (``prefix`` defaults to the cache's
    ``namespace``, "cache"). Without a URL (neither argument nor ``REDIS_CACHE_URL`` /
    ``REDIS_URL``) it is the in-memory twin. ``.sync`` is the blocking face of the
    same cache (same statistics); failure policy: see ``redundancy.cache.core``.
    """

    async def get(self, key: str, default: Any = None, *, prefix: str | None = None) -> Any:
        """The stored value, or ``default`` (absent, expired, or the cache failed)."""
        value = await run_async(self.core.get(key, prefix), self.core.connector.async_())
        return default if value is MISS else value

    async def set(
        self, key: str, value: Any, ttl: float | None = None, *, prefix: str | None = None
    ) -> bool:
        """Store ``value`` (JSON) for ``ttl`` seconds (default ``default_ttl``)."""
        return await run_async(self.core.set(key, value, ttl, prefix), self.core.connector.async_())

    async def get_or_set(
        self,
        key: str,
        factory: Callable[[], Any],
        ttl: float | None = None,
        *,
        prefix: str | None = None,
        validate: Callable[[Any], bool] | None = None,
    ) -> Any:
        """The stored value, else ``factory()`` (sync or async), computed once across
        every process that misses at the same moment, then stored. A sync factory runs
        in the event loop's thread: wrap slow CPU work with ``asyncio.to_thread``.
        ``validate``: a stored value it refuses is computed again and overwritten."""
        flow = self.core.get_or_set(key, factory, ttl, prefix, validate)
        return await run_async(flow, self.core.connector.async_())

    async def delete(self, key: str, *, prefix: str | None = None) -> bool:
        return await run_async(self.core.delete(key, prefix), self.core.connector.async_())

    async def delete_pattern(
        self, pattern: str, prefix: str | None = None, *, batch: int = SCAN_BATCH
    ) -> int:
        """Delete the keys of namespace ``prefix`` matching the glob ``pattern``; returns
        how many. Raises ``CacheUnavailableError`` if the server fails."""
        flow = self.core.delete_pattern(pattern, prefix, batch)
        return await run_async(flow, self.core.connector.async_())

    async def count_keys(self, prefix: str | None = None) -> dict[str, int]:
        return await run_async(self.core.count_keys(prefix), self.core.connector.async_())

    async def shared_stats(self) -> dict[str, Any]:
        """``stats()`` summed over every process using this Redis (shared ~once a second)."""
        return await run_async(self.core.shared_stats(), self.core.connector.async_())

    async def flush_stats(self) -> None:
        await run_async(self.core.flush_stats(), self.core.connector.async_())

    async def ping(self) -> bool:
        return await run_async(self.core.ping(), self.core.connector.async_())

    async def close(self) -> None:
        """Close this event loop's connections (they are pooled per loop)."""
        await self.core.connector.aclose()

    @property
    def sync(self) -> SyncRedisCache:
        """The blocking face of this same cache."""
        return SyncRedisCache(core=self.core)


class SyncRedisCache(_Face):
    """The blocking face of ``RedisCache`` (same arguments, methods and behaviour), for
    Celery workers and scripts. A sync ``factory`` only."""

    def get(self, key: str, default: Any = None, *, prefix: str | None = None) -> Any:
        value = run_sync(self.core.get(key, prefix), self.core.connector.sync())
        return default if value is MISS else value

    def set(
        self, key: str, value: Any, ttl: float | None = None, *, prefix: str | None = None
    ) -> bool:
        return run_sync(self.core.set(key, value, ttl, prefix), self.core.connector.sync())

    def get_or_set(
        self,
        key: str,
        factory: Callable[[], Any],
        ttl: float | None = None,
        *,
        prefix: str | None = None,
        validate: Callable[[Any], bool] | None = None,
        early: EarlyLookup | None = None,
        defer: Callable[[StoreLater], bool] | None = None,
    ) -> Any:
        flow = self.core.get_or_set(key, factory, ttl, prefix, validate, early, defer)
        return run_sync(flow, self.core.connector.sync())

    def delete(self, key: str, *, prefix: str | None = None) -> bool:
        return run_sync(self.core.delete(key, prefix), self.core.connector.sync())

    def delete_pattern(
        self, pattern: str, prefix: str | None = None, *, batch: int = SCAN_BATCH
    ) -> int:
        return run_sync(
            self.core.delete_pattern(pattern, prefix, batch), self.core.connector.sync()
        )

    def count_keys(self, prefix: str | None = None) -> dict[str, int]:
        return run_sync(self.core.count_keys(prefix), self.core.connector.sync())

    def shared_stats(self) -> dict[str, Any]:
        return run_sync(self.core.shared_stats(), self.core.connector.sync())

    def flush_stats(self) -> None:
        run_sync(self.core.flush_stats(), self.core.connector.sync())

    def ping(self) -> bool:
        return run_sync(self.core.ping(), self.core.connector.sync())

    def close(self) -> None:
        self.core.connector.close()


def get_cache() -> SyncRedisCache:
    """The process's cache from the settings (sync face), made on first use and again
    in a forked child (``redundancy.resources``)."""
    return resources.shared("cache", _new_default_cache)


def current_cache() -> SyncRedisCache | None:
    """The process's cache if it was made (hooks that must not make one)."""
    cache: SyncRedisCache | None = resources.built("cache")
    return cache


def _new_default_cache() -> SyncRedisCache:
    cache = SyncRedisCache()
    atexit.register(_flush_at_exit, cache)
    return cache


def _flush_at_exit(cache: SyncRedisCache) -> None:
    with contextlib.suppress(Exception):  # leaving: counts of its last second are lost
        cache.flush_stats()


def reset_cache() -> None:
    """Forget the process's cache (tests; after a settings change)."""
    resources.forget("cache")
