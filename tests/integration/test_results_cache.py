"""The tasks' results cache on real Redis, in-process and through a real worker,
including a cache server that really goes away."""

from __future__ import annotations

import json

import pytest
import redis
from prometheus_client import REGISTRY

from redundancy.cache import reset_cache
from redundancy.cache.results import analysis_key
from redundancy.config import get_settings
from redundancy.core import analyze

pytestmark = pytest.mark.integration

TEXT_A = "The tide came in. The tide came in again. Gulls argued over the pier."
TEXT_B = "Lanterns swung in the rain. Nobody came. Lanterns swung in the rain!"


def errors(ctype: str = "analysis", operation: str = "get_or_set") -> float:
    return (
        REGISTRY.get_sample_value(
            "redundancy_cache_errors_total", {"cache_type": ctype, "operation": operation}
        )
        or 0.0
    )


@pytest.fixture
def cache_env(monkeypatch):
    """Point this process's settings (and so ``get_cache()``) at a given Redis."""

    def point(url: str, **extra: str) -> None:
        monkeypatch.setenv("REDIS_CACHE_URL", url)
        for name, value in extra.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        reset_cache()

    yield point
    monkeypatch.delenv("REDIS_CACHE_URL", raising=False)
    get_settings.cache_clear()
    reset_cache()


def test_in_process_task_survives_a_stopped_cache_and_counts_the_error(private_redis, cache_env):
    from redundancy.tasks import analyze_content

    # Given the results cache on a private Redis that works
    cache_env(private_redis.url, CACHE_RETRY_AFTER="0", CACHE_SOCKET_TIMEOUT="0.5")
    first = analyze_content(TEXT_A)
    stored = redis.Redis.from_url(private_redis.url).get(
        "redundancy:cache:v1:" + analysis_key(TEXT_A, 0.8, "ratio")
    )
    assert json.loads(stored) == first
    before = errors()
    # When the cache server is stopped
    private_redis.stop()
    # Then the task still computes the right result, and the failure is counted
    result = analyze_content(TEXT_B)
    assert result == analyze(TEXT_B).model_dump(mode="json")
    assert errors() == before + 1


def test_worker_uses_the_cache_and_survives_its_outage(redis_cluster, private_redis):
    # Given a worker whose results cache is a private Redis (broker and backend elsewhere)
    worker = redis_cluster.start_worker(
        concurrency=1,
        REDIS_CACHE_URL=private_redis.url,
        CACHE_RETRY_AFTER="1",
        CACHE_SOCKET_TIMEOUT="0.5",
    )
    submit = """
        import json
        from redundancy.tasks import analyze_content
        print(json.dumps(analyze_content.delay({text!r}).get(timeout=60)))
    """
    first = redis_cluster.producer(submit.format(text=TEXT_A))
    assert first == analyze(TEXT_A).model_dump(mode="json")
    # the result was stored; a second submission returns it without recomputing
    # (proved by changing the stored copy: the worker returns the changed one)
    cache_db = redis.Redis.from_url(private_redis.url)
    key = "redundancy:cache:v1:" + analysis_key(TEXT_A, 0.8, "ratio")
    assert 0 < cache_db.pttl(key) <= 3600 * 1000
    cache_db.set(key, json.dumps({**first, "word_count": -1}), keepttl=True)
    again = redis_cluster.producer(submit.format(text=TEXT_A))
    assert again["word_count"] == -1
    # When the cache server is stopped, tasks still succeed with the right result
    private_redis.stop()
    during = redis_cluster.producer(submit.format(text=TEXT_B))
    assert during == analyze(TEXT_B).model_dump(mode="json")
    assert "cache get_or_set failed" in worker.text()
    # and when it is back, the worker caches again (once its CACHE_RETRY_AFTER pause
    # after the error is over: resubmitted until the result is stored, within a bound)
    private_redis.start()
    key_b = "redundancy:cache:v1:" + analysis_key(TEXT_B, 0.8, "ratio")
    resubmit = """
        import json, time
        import redis
        from redundancy.tasks import analyze_content
        cache = redis.Redis.from_url({url!r})
        results = []
        for _ in range(60):
            results.append(analyze_content.delay({text!r}).get(timeout=60))
            if cache.exists({key!r}):
                break
            time.sleep(0.5)
        print(json.dumps(results))
    """
    after = redis_cluster.producer(resubmit.format(url=private_redis.url, text=TEXT_B, key=key_b))
    assert all(result == during for result in after)
    stored = redis.Redis.from_url(private_redis.url).get(key_b)
    assert stored is not None, f"not cached again after {len(after)} submissions"
    assert json.loads(stored) == during
    # The worker's counts reach the shared statistics (at the latest when its processes
    # stop), including the error counted while the server was down
    worker.stop()
    proc = redis_cluster.crd("cache", "stats", "--json", REDIS_CACHE_URL=private_redis.url)
    assert proc.returncode == 0, proc.stderr
    shared = json.loads(proc.stdout)["namespaces"]["analysis"]
    assert shared["errors"] >= 1 and shared["misses"] >= 1 and shared["sets"] >= 1


def rejected(ctype: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "redundancy_cache_rejected_values_total", {"cache_type": ctype, "reason": reason}
        )
        or 0.0
    )


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        (b'{"not": "a result"}', "invalid"),  # valid JSON, another shape
        (b"[1, 2, 3]", "invalid"),
        (b"\xff\xfe not json", "undecodable"),
        ("almost", "invalid"),  # the right result with one field a string: no coercion
        ("extra", "invalid"),  # the right result plus a field the model does not have
    ],
)
def test_a_poisoned_entry_is_a_counted_miss_and_is_overwritten_with_a_ttl(
    redis_server, cache_env, poison, reason
):
    from redundancy.cache.results import similarity_key
    from redundancy.core import similarity
    from redundancy.tasks import analyze_content, compare_texts
    from tests.services import REDIS_CACHE_DB, flush_db, redis_url

    url = redis_url(REDIS_CACHE_DB)
    flush_db(url)
    cache_env(url)
    client = redis.Redis.from_url(url)
    right_a = analyze(TEXT_A).model_dump(mode="json")
    right_s = similarity(TEXT_A, TEXT_B, "ratio", 0.8).model_dump(mode="json")
    cases = [
        ("analysis", analysis_key(TEXT_A, 0.8, "ratio"), right_a, lambda: analyze_content(TEXT_A)),
        (
            "similarity",
            similarity_key(TEXT_A, TEXT_B, 0.8, "ratio"),
            right_s,
            lambda: compare_texts(TEXT_A, TEXT_B),
        ),
    ]
    for ctype, key, right, run in cases:
        # Given a value under the result's cache key that is not that result, without a TTL
        if poison == "almost":
            field = "redundancy_score" if ctype == "analysis" else "similarity_score"
            value = json.dumps({**right, field: str(right[field])}).encode()
        elif poison == "extra":
            value = json.dumps({**right, "injected": True}).encode()
        else:
            value = poison
        full = "redundancy:cache:v1:" + key
        client.set(full, value)
        before = rejected(ctype, reason)
        # When the task runs
        result = run()
        # Then it is not believed: the task returns the computed result, the refusal is
        # counted with its reason, and the entry now holds the right value, with a TTL
        assert result == right
        assert rejected(ctype, reason) == before + 1
        assert json.loads(client.get(full)) == right
        assert 0 < client.pttl(full) <= 3600 * 1000
        # and the next run is a plain hit
        assert run() == right
        assert rejected(ctype, reason) == before + 1
