"""The cache on real Redis -- and the same contract on the in-memory twin.

Every test that takes ``kv_url`` runs twice: against the test database of the shared
Redis (``REDIS_CACHE_DB``, flushed) and against ``memory://``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
import redis
from prometheus_client import REGISTRY

from redundancy import keys
from redundancy.cache import CacheUnavailableError, RedisCache, SyncRedisCache
from tests.services import REDIS_CACHE_DB, flush_db, redis_url

pytestmark = pytest.mark.integration


@pytest.fixture
def cache_db(redis_server: str) -> redis.Redis:
    url = redis_url(REDIS_CACHE_DB)
    flush_db(url)
    return redis.Redis.from_url(url)


def new_cache(url: str, **kw) -> SyncRedisCache:
    return SyncRedisCache(redis_url=url, default_ttl=kw.pop("default_ttl", 60), **kw)


def errors(ctype: str, operation: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "redundancy_cache_errors_total", {"cache_type": ctype, "operation": operation}
        )
        or 0.0
    )


# --- values, TTLs, namespaces ------------------------------------------------------------


def test_values_round_trip_as_json_and_every_entry_has_a_ttl(kv_url):
    cache = new_cache(kv_url, default_ttl=30)
    value = {"score": 0.125, "words": ["ä", "b"], "n": None, "ok": True}
    assert cache.set("analysis:a", value)
    assert cache.get("analysis:a") == value
    assert cache.get("analysis:missing", default="d") == "d"
    backend = cache.core.connector.sync()
    ttl = backend.execute(("PTTL", keys.cache_key("cache", "analysis:a")))
    assert 0 < ttl <= 30_000
    with pytest.raises(TypeError):
        cache.set("analysis:b", {1, 2})  # not JSON: the caller's bug, raised
    with pytest.raises(ValueError, match="ttl"):
        cache.set("analysis:b", 1, ttl=0)


def test_ttl_expiry_really_happens(kv_url):
    cache = new_cache(kv_url)
    backend = cache.core.connector.sync()
    cache.set("t:short", "v", ttl=2)
    cache.set("t:long", "v", ttl=30)
    assert cache.get("t:short") == "v"
    assert 0 < backend.execute(("PTTL", keys.cache_key("cache", "t:short"))) <= 2000
    for _ in range(100):  # wait for the expiry (bounded: 10 s of polls for a 2 s TTL)
        if cache.get("t:short") is None:
            break
        time.sleep(0.1)
    else:
        pytest.fail("an entry outlived its TTL")
    assert backend.execute(("EXISTS", keys.cache_key("cache", "t:short"))) == 0
    assert cache.get("t:long") == "v"


def test_keys_are_namespaced_and_prefixes_of_other_areas_are_refused(kv_url):
    cache = new_cache(kv_url)
    cache.set("k", 1)
    cache.set("k", 2, prefix="thumbs")
    backend = cache.core.connector.sync()
    assert backend.execute(("GET", "redundancy:cache:v1:k")) == b"1"
    assert backend.execute(("GET", "redundancy:thumbs:v1:k")) == b"2"
    for bad in ("sessions", "batch", "Cache", "a:b", "*"):
        with pytest.raises(ValueError):
            cache.get("k", prefix=bad)


def test_a_corrupt_stored_value_is_an_error_and_a_miss_then_overwritten(kv_url):
    cache = new_cache(kv_url)
    backend = cache.core.connector.sync()
    backend.execute(("SET", keys.cache_key("cache", "bad:1"), b"\xff not json", "PX", 10_000))
    assert cache.get_or_set("bad:1", lambda: {"fresh": 1}) == {"fresh": 1}
    assert cache.stats()["namespaces"]["bad"]["errors"] == 1
    assert cache.get("bad:1") == {"fresh": 1}


# --- statistics --------------------------------------------------------------------------


def test_stats_are_exact_after_a_known_sequence(kv_url):
    cache = new_cache(kv_url)
    cache.set("analysis:a", 1)  # sets 1
    cache.get("analysis:a")  # hit
    cache.get("analysis:b")  # miss
    cache.get_or_set("analysis:c", lambda: 3)  # miss (+ set)
    cache.get_or_set("analysis:c", lambda: 4)  # hit
    cache.get("similarity:x")  # miss
    cache.delete("analysis:a")  # delete 1
    cache.get("analysis:a")  # miss
    cache.delete("analysis:never")  # deletes nothing
    expected_analysis = {
        "hits": 2,
        "misses": 3,
        "errors": 0,
        "sets": 2,
        "deletes": 1,
        "hit_rate": 0.4,
    }
    stats = cache.stats()
    assert stats["namespaces"] == {
        "analysis": expected_analysis,
        "similarity": {
            "hits": 0,
            "misses": 1,
            "errors": 0,
            "sets": 0,
            "deletes": 0,
            "hit_rate": 0.0,
        },
    }
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (2, 4, 2 / 6)
    # shared across processes through Redis: after a flush they equal the local counts
    assert cache.shared_stats() == stats


def test_async_and_sync_faces_share_one_implementation_and_statistics(kv_url):
    cache = RedisCache(redis_url=kv_url, default_ttl=60)

    async def scenario():
        await cache.set("analysis:x", {"v": 1})
        assert await cache.get("analysis:x") == {"v": 1}
        assert await cache.get_or_set("analysis:y", lambda: 2) == 2

        async def async_factory():
            await asyncio.sleep(0)
            return 3

        assert await cache.get_or_set("analysis:z", async_factory) == 3
        await cache.close()

    asyncio.run(scenario())
    assert cache.sync.get("analysis:z") == 3
    assert cache.stats()["namespaces"]["analysis"]["hits"] == 2
    assert cache.stats() is not None and cache.sync.stats() == cache.stats()
    with pytest.raises(TypeError, match="sync factory"):
        cache.sync.get_or_set("analysis:w", async_factory_for_sync)


async def async_factory_for_sync():
    return 1


# --- get_or_set under concurrency ----------------------------------------------------------


def test_get_or_set_with_20_concurrent_threads_computes_once(kv_url):
    cache = new_cache(kv_url)
    calls = []
    start = threading.Barrier(20)

    def factory():
        calls.append(threading.get_ident())
        time.sleep(0.3)  # long enough that every caller misses while it runs
        return {"computed": len(calls)}

    results: list[object] = []

    def caller():
        start.wait()
        results.append(cache.get_or_set("analysis:hot", factory))

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(calls) == 1
    assert results == [{"computed": 1}] * 20
    row = cache.stats()["namespaces"]["analysis"]
    assert (row["misses"], row["hits"], row["sets"]) == (1, 19, 1)


def test_get_or_set_with_20_concurrent_asyncio_tasks_computes_once(kv_url):
    cache = RedisCache(redis_url=kv_url, default_ttl=60)
    calls = 0

    async def factory():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)
        return [calls]

    async def scenario():
        out = await asyncio.gather(*(cache.get_or_set("analysis:hot", factory) for _ in range(20)))
        await cache.close()
        return out

    assert asyncio.run(scenario()) == [[1]] * 20
    assert calls == 1


def test_a_failing_factory_releases_the_lock_for_the_next_caller(kv_url, caplog):
    cache = new_cache(kv_url, lock_timeout=30)
    backend = cache.core.connector.sync()
    lock = keys.cache_lock("cache", "analysis:f")

    def boom():
        assert backend.execute(("EXISTS", lock)) == 1  # the failing caller held the lock
        raise RuntimeError("factory failed")

    with pytest.raises(RuntimeError, match="factory failed"):
        cache.get_or_set("analysis:f", boom)
    # the lock is released at once, not left to expire after its 30 s
    assert backend.execute(("EXISTS", lock)) == 0
    assert backend.execute(("EXISTS", keys.cache_key("cache", "analysis:f"))) == 0  # nothing stored

    def second():
        assert backend.execute(("EXISTS", lock)) == 1  # the next caller took the lock itself
        return "second"

    with caplog.at_level(logging.WARNING, logger="redundancy.cache"):
        assert cache.get_or_set("analysis:f", second) == "second"
    assert "computing" not in caplog.text  # it never waited for a lock
    assert backend.execute(("EXISTS", lock)) == 0
    assert cache.get("analysis:f") == "second"


def test_a_dead_lock_holder_delays_others_only_until_its_lock_expires(kv_url, caplog):
    # Given a lock left behind by a holder that died (its token is not ours)
    cache = new_cache(kv_url, lock_timeout=5)
    backend = cache.core.connector.sync()
    lock = keys.cache_lock("cache", "analysis:orphan")
    backend.execute(("SET", lock, "dead-token", "PX", 400))
    held_by: list[object] = []

    def factory():
        held_by.append(backend.execute(("GET", lock)))
        return "mine"

    # When a caller misses, it waits for the lock to expire, then takes the lock itself,
    # computes and stores
    with caplog.at_level(logging.WARNING, logger="redundancy.cache"):
        assert cache.get_or_set("analysis:orphan", factory) == "mine"
    # Then the factory ran under the caller's own lock (a token, not the dead holder's)
    [token] = held_by
    assert token is not None and as_bytes(token) != b"dead-token"
    # and not because the caller gave up waiting for the full lock_timeout
    assert "computing" not in caplog.text
    assert backend.execute(("EXISTS", lock)) == 0  # released after storing
    assert cache.get("analysis:orphan") == "mine"


def as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


# --- pattern deletion ----------------------------------------------------------------------


def test_delete_pattern_among_100000_keys_removes_exactly_its_own(cache_db):
    # Given 100,000 keys: three sets in the cache namespace, one in another namespace,
    # and keys of other areas (sessions, batches) that look alike
    url = redis_url(REDIS_CACHE_DB)
    groups = {
        "redundancy:cache:v1:analysis:": 40_000,
        "redundancy:cache:v1:similarity:": 25_000,
        "redundancy:cache:v1:analysisx:": 5_000,  # "analysis*" would wrongly match these
        "redundancy:thumbs:v1:analysis:": 25_000,  # same pattern, other namespace
        "redundancy:sessions:v1:analysis:": 5_000,  # another area altogether
    }
    assert sum(groups.values()) == 100_000
    pipe = cache_db.pipeline(transaction=False)
    for head, count in groups.items():
        for i in range(count):
            pipe.set(f"{head}{i}", b"1", px=600_000)
            if len(pipe) >= 5000:
                pipe.execute()
    pipe.execute()
    assert cache_db.dbsize() == 100_000
    # When the cache deletes "analysis:*" in its namespace
    cache = new_cache(url)
    deleted = cache.delete_pattern("analysis:*", prefix="cache")
    # Then exactly those 40,000 are gone and every other key is still there
    assert deleted == 40_000
    remaining = {head: 0 for head in groups}
    for key in cache_db.scan_iter(count=5000):
        text = key.decode()
        remaining[text[: text.rindex(":") + 1]] += 1
    assert remaining == {**groups, "redundancy:cache:v1:analysis:": 0}
    assert cache.stats()["namespaces"]["analysis"]["deletes"] == 40_000


def test_delete_pattern_on_a_few_keys_and_the_async_face(kv_url):
    cache = RedisCache(redis_url=kv_url, default_ttl=60)

    async def scenario():
        for i in range(25):
            await cache.set(f"analysis:{i}", i)
            await cache.set(f"similarity:{i}", i)
        await cache.set("analysis:1", 1, prefix="thumbs")
        deleted = await cache.delete_pattern("analysis:*", prefix="cache", batch=7)
        counts = await cache.count_keys()
        other = await cache.get("analysis:1", prefix="thumbs")
        await cache.close()
        return deleted, counts, other

    assert asyncio.run(scenario()) == (25, {"similarity": 25}, 1)


# --- outages -----------------------------------------------------------------------------


def test_with_the_server_stopped_data_operations_fail_open_and_count_errors(private_redis):
    # Given a cache on a private Redis that works
    cache = new_cache(private_redis.url, retry_after=0, socket_timeout=0.5)
    assert cache.set("analysis:a", 1) and cache.get("analysis:a") == 1
    before = errors("analysis", "get")
    # When the server is stopped
    private_redis.stop()
    # Then reads miss, writes report False, get_or_set computes -- and errors are counted
    assert cache.get("analysis:a") is None
    assert cache.set("analysis:b", 2) is False
    assert cache.get_or_set("analysis:c", lambda: "computed") == "computed"
    assert cache.delete("analysis:a") is False
    row = cache.stats()["namespaces"]["analysis"]
    assert row["errors"] == 4 and row["hits"] == 1 and row["misses"] == 0
    assert errors("analysis", "get") == before + 1
    # and admin operations say so instead of pretending
    with pytest.raises(CacheUnavailableError):
        cache.delete_pattern("*")
    # When the server is back, the cache works again
    private_redis.start()
    assert cache.set("analysis:d", 4) and cache.get("analysis:d") == 4


def test_after_a_connection_error_the_cache_is_skipped_for_retry_after(private_redis):
    cache = new_cache(private_redis.url, retry_after=30, socket_timeout=0.5)
    private_redis.stop()
    assert cache.get("analysis:a") is None  # tries, fails, opens the breaker
    private_redis.start()
    assert cache.get("analysis:a") is None  # skipped without trying: still an error
    assert cache.stats()["errors"] == 2
    cache.core._down_until = 0  # the 30 s are over
    assert cache.set("analysis:a", 1) and cache.get("analysis:a") == 1


def test_fail_closed_mode_raises(private_redis):
    cache = new_cache(private_redis.url, fail_open=False, retry_after=0, socket_timeout=0.5)
    private_redis.stop()
    with pytest.raises(CacheUnavailableError):
        cache.get("analysis:a")
    assert cache.stats()["errors"] == 1


def test_a_forked_child_builds_its_own_clients_and_counts(cache_db):
    import os

    cache = new_cache(redis_url(REDIS_CACHE_DB))
    cache.set("analysis:parent", 1)
    parent_backend = cache.core.connector.sync()
    pid = os.fork()
    if pid == 0:  # the child: a prefork pool process, in effect
        ok = (
            cache.core.connector._sync is None
            and cache.stats()["sets"] == 0
            and cache.set("analysis:child", 2)
            and cache.core.connector.sync() is not parent_backend
            and cache.stats()["sets"] == 1
        )
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.get("analysis:child") == 2  # the parent's connections still work
    assert cache.stats()["sets"] == 1
