"""Cache pieces that need no server: keys, the twin's Redis semantics, the results cache
of the tasks on the embedded default, settings."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from redundancy import keys
from redundancy.cache import SyncRedisCache, get_cache, reset_cache
from redundancy.cache.results import analysis_key, similarity_key
from redundancy.config import get_settings, load_settings
from redundancy.core import ANALYSIS_VERSION, analyze, similarity
from redundancy.errors import ConfigurationError, EmptyTextError
from redundancy.kv.memory import MemoryStore, glob_regex
from tests.services import free_port


@pytest.fixture(autouse=True)
def fresh_cache():
    reset_cache()
    yield
    get_settings.cache_clear()
    reset_cache()


# --- keys -------------------------------------------------------------------------------


def test_result_keys_carry_version_parameters_and_the_right_hash():
    a = analysis_key("Hello  World", 0.8, "ratio")
    assert a.startswith(f"analysis:v{ANALYSIS_VERSION}:ratio:0.8:")
    # the exact text decides (results quote it), not its normal form
    assert analysis_key("hello world", 0.8, "ratio") != a
    assert analysis_key("Hello  World", 0.9, "ratio") != a
    assert analysis_key("Hello  World", 0.8, "WRatio") != a
    # similarity results depend only on the normalised texts: their hashes decide
    assert similarity_key("Hello  World", "b", 0.8, "ratio") == similarity_key(
        "hello world", "B", 0.8, "ratio"
    )
    assert similarity_key("a", "b", 0.8, "ratio") != similarity_key("b", "a", 0.8, "ratio")
    assert keys.cache_key("cache", a) == "redundancy:cache:v1:" + a


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("analysis:*", ["analysis:", "analysis:x:y"], ["analysisx:1", "x:analysis:1"]),
        ("a?c", ["abc"], ["ac", "abbc"]),
        ("a[bc]d", ["abd", "acd"], ["aed"]),
        ("a[^b]d", ["acd"], ["abd"]),
        (r"a\*b", ["a*b"], ["axb"]),
    ],
)
def test_glob_follows_redis_match_syntax(pattern, yes, no):
    regex = glob_regex(pattern)
    assert all(regex.fullmatch(s) for s in yes)
    assert not any(regex.fullmatch(s) for s in no)


# --- the in-memory twin -------------------------------------------------------------------


def test_twin_expires_keys_and_evicts_the_least_recently_used():
    store = MemoryStore(max_keys=3)
    store.execute(("SET", "a", "1", "PX", 50))
    assert store.execute(("GET", "a")) == b"1"
    assert 0 < store.execute(("PTTL", "a")) <= 50
    time.sleep(0.08)
    assert store.execute(("GET", "a")) is None and store.execute(("PTTL", "a")) == -2
    for k in "bcd":
        store.execute(("SET", k, k))
    store.execute(("GET", "b"))  # b is now more recent than c
    store.execute(("SET", "e", "e"))
    assert [store.execute(("EXISTS", k)) for k in "bcde"] == [1, 0, 1, 1]
    assert store.execute(("SET", "b", "x", "NX")) is None


def test_twin_scan_returns_every_key_even_while_deleting():
    store = MemoryStore()
    for i in range(100):
        store.execute(("SET", f"k:{i:03}", "v"))
    cursor, seen = 0, []
    while True:
        cursor, found = store.execute(("SCAN", cursor, "MATCH", "k:*", "COUNT", 7))
        seen += found
        if found:
            store.execute(("UNLINK", *found))
        if cursor == 0:
            break
    assert len(seen) == 100 and store.execute(("DBSIZE",)) == 0


# --- the results cache in the tasks (embedded default: the twin) ----------------------------


def test_second_submission_is_served_from_the_cache_and_equals_a_recompute():
    from redundancy.tasks import analyze_content, compare_texts

    text = "Rain again. Rain again. The roof holds."
    first = analyze_content.delay(text).get()
    second = analyze_content.delay(text).get()
    assert first == second == analyze(text).model_dump(mode="json")
    row = get_cache().stats()["namespaces"]["analysis"]
    assert (row["misses"], row["hits"]) == (1, 1)
    compare_texts.delay("Hello  World", "hello there").get()
    same = compare_texts.delay("hello world", "HELLO THERE").get()  # shares the entry
    assert same == similarity("hello world", "HELLO THERE").model_dump(mode="json")
    assert get_cache().stats()["namespaces"]["similarity"]["hits"] == 1


def test_a_wrong_shaped_entry_in_the_twin_is_recomputed_and_overwritten():
    from redundancy.tasks import analyze_content

    # Given, on the embedded default, a value of another shape under a result's key
    text = "Rain again. Rain again. The roof holds."
    key = analysis_key(text, 0.8, "ratio")
    get_cache().set(key, {"redundancy_score": 0.0})
    labels = {"cache_type": "analysis", "reason": "invalid"}
    before = REGISTRY.get_sample_value("redundancy_cache_rejected_values_total", labels) or 0
    # When the task runs, Then it returns the computed result, counts the refusal, and the
    # entry is the right result from then on
    right = analyze(text).model_dump(mode="json")
    assert analyze_content.delay(text).get() == right
    assert REGISTRY.get_sample_value("redundancy_cache_rejected_values_total", labels) == before + 1
    assert get_cache().get(key) == right


def test_texts_differing_only_in_case_and_spacing_get_their_own_exact_results():
    from redundancy.tasks import analyze_content

    a = "The cat sat.  The cat sat."
    b = "THE CAT SAT. The cat sat."
    ra, rb = analyze_content(a), analyze_content(b)
    assert ra["content_hash"] == rb["content_hash"]  # same normal form ...
    assert ra == analyze(a).model_dump(mode="json")  # ... yet each result is its own text's
    assert rb == analyze(b).model_dump(mode="json")
    assert ra["character_count"] != rb["character_count"]
    assert rb["near_duplicate_sentences"][0]["text_a"] == "THE CAT SAT."


def test_invalid_input_fails_without_touching_the_cache():
    from redundancy.tasks import analyze_content

    with pytest.raises(EmptyTextError):
        analyze_content("   ")
    assert get_cache().stats()["hits"] + get_cache().stats()["misses"] == 0


def test_a_broken_cache_layer_never_fails_the_task(monkeypatch):
    from redundancy.cache import results
    from redundancy.tasks import analyze_content

    class Broken:
        def get_or_set(self, key, factory):
            raise RuntimeError("bug in the cache layer")

    monkeypatch.setattr(results, "get_cache", Broken)
    before = (
        REGISTRY.get_sample_value(
            "redundancy_cache_errors_total", {"cache_type": "analysis", "operation": "internal"}
        )
        or 0
    )
    assert analyze_content("One. Two. One.") == analyze("One. Two. One.").model_dump(mode="json")
    after = REGISTRY.get_sample_value(
        "redundancy_cache_errors_total", {"cache_type": "analysis", "operation": "internal"}
    )
    assert after == before + 1


def test_cache_results_false_bypasses_the_cache(monkeypatch):
    from redundancy.tasks import analyze_content

    monkeypatch.setenv("CACHE_RESULTS", "false")
    get_settings.cache_clear()
    analyze_content("One. One.")
    analyze_content("One. One.")
    assert get_cache().stats()["misses"] == 0


def test_a_refused_connection_fails_open_and_is_counted():
    # a real refused connection: nothing listens on this port
    cache = SyncRedisCache(redis_url=f"redis://127.0.0.1:{free_port()}/0", retry_after=60)
    assert cache.get_or_set("analysis:x", lambda: 42) == 42
    assert cache.get("analysis:x") is None  # skipped: the server failed < 60 s ago
    assert cache.stats()["errors"] == 2 and cache.stats()["misses"] == 0


# --- settings ------------------------------------------------------------------------------


def test_session_limits_must_be_ordered_and_errors_name_the_variable():
    with pytest.raises(ConfigurationError, match="SESSION_MAX_TTL"):
        load_settings(session_default_ttl=7200, session_max_ttl=3600)
    with pytest.raises(ConfigurationError, match="CACHE_SOCKET_TIMEOUT"):
        load_settings(cache_socket_timeout=0)
    assert load_settings(redis_url="redis://r:6379/0").cache_url == "redis://r:6379/0"
    assert (
        load_settings(redis_url="redis://r/0", redis_cache_url="redis://c/0").cache_url
        == "redis://c/0"
    )


def test_embedded_session_manager_is_one_in_memory_store_for_both_faces():
    import asyncio

    from redundancy.sessions import get_session_manager, reset_session_manager

    reset_session_manager()
    manager = get_session_manager()
    assert manager is get_session_manager() and "in-memory" in manager.url
    sid = asyncio.run(manager.create_session(user_id="u", data={"k": 1})).session_id
    assert manager.sync.get_session(sid).data == {"k": 1}
    reset_session_manager()
