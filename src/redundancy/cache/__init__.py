"""Redis result cache: namespaced JSON values with TTLs, pooled, measured, fail-open.

    from redundancy.cache import RedisCache
    cache = RedisCache(redis_url="redis://localhost:6379/2", default_ttl=3600)
    await cache.get_or_set("analysis:" + digest, compute, ttl=600)

``RedisCache`` is async (the original API); ``cache.sync`` / ``SyncRedisCache`` is the
blocking face workers use, over the same implementation (``redundancy.cache.core``).
``get_cache()`` is the process's cache from the settings; without ``REDIS_CACHE_URL``
and ``REDIS_URL`` it is the in-memory twin.
"""

from __future__ import annotations

from redundancy.cache.client import RedisCache, SyncRedisCache, get_cache, reset_cache
from redundancy.cache.core import CacheUnavailableError

__all__ = ["CacheUnavailableError", "RedisCache", "SyncRedisCache", "get_cache", "reset_cache"]
