"""``crd cache`` and ``crd sessions`` against real Redis, and their ``crd doctor`` lines."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from redundancy.cache import SyncRedisCache, reset_cache
from redundancy.cli import cli
from redundancy.config import get_settings
from redundancy.sessions import SyncSessionManager, reset_session_manager
from tests.services import REDIS_CACHE_DB, flush_db, free_port, redis_url

pytestmark = pytest.mark.integration


@pytest.fixture
def env(monkeypatch, redis_server):
    url = redis_url(REDIS_CACHE_DB)
    flush_db(url)

    def use(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        reset_cache()
        reset_session_manager()

    use(REDIS_CACHE_URL=url, REDIS_URL=url)
    yield url, use
    monkeypatch.delenv("REDIS_CACHE_URL")
    monkeypatch.delenv("REDIS_URL")
    get_settings.cache_clear()
    reset_cache()
    reset_session_manager()


def test_crd_cache_clear_and_stats(env):
    url, _ = env
    cache = SyncRedisCache(redis_url=url, default_ttl=60)
    for i in range(30):
        cache.set(f"analysis:{i}", i)
        cache.set(f"similarity:{i}", i)
    cache.get("analysis:1")
    cache.get("analysis:none")
    cache.flush_stats()
    runner = CliRunner()
    out = runner.invoke(cli, ["cache", "clear", "analysis:*"])
    assert out.exit_code == 0, out.output
    assert "deleted 30 entries matching redundancy:cache:v1:analysis:*" in out.output
    stats = json.loads(runner.invoke(cli, ["cache", "stats", "--keys", "--json"]).output)
    assert stats["keys"] == {"similarity": 30}
    analysis = stats["namespaces"]["analysis"]
    assert (analysis["hits"], analysis["misses"]) == (1, 1)
    table = runner.invoke(cli, ["cache", "stats", "--keys"])
    assert table.exit_code == 0 and "similarity" in table.output and "50.0%" in table.output
    refused = runner.invoke(cli, ["cache", "clear", "--prefix", "sessions"])
    assert refused.exit_code == 2 and "another part's key area" in refused.output


def test_crd_sessions_list_and_revoke(env):
    url, _ = env
    sessions = SyncSessionManager(url)
    ids = {
        sessions.create_session(user_id="ana", ip_address="10.0.0.1").session_id for _ in range(2)
    }
    runner = CliRunner()
    out = runner.invoke(cli, ["sessions", "list", "ana"])
    listed = [json.loads(line) for line in out.output.splitlines()]
    assert {s["session_id"] for s in listed} == ids and "data" not in listed[0]
    assert "revoked 2 sessions" in runner.invoke(cli, ["sessions", "revoke", "ana"]).output
    assert sessions.list_sessions("ana") == []


def test_doctor_reports_the_cache_and_sessions(env):
    _, use = env
    runner = CliRunner()
    ok = runner.invoke(cli, ["doctor"])
    assert "✓ cache" in ok.output and "✓ sessions" in ok.output
    use(REDIS_CACHE_URL=f"redis://127.0.0.1:{free_port()}/0")
    bad = runner.invoke(cli, ["doctor"])
    assert bad.exit_code == 1
    assert "✗ cache" in bad.output and "REDIS_CACHE_URL" in bad.output
    down = runner.invoke(cli, ["cache", "stats"])
    assert down.exit_code == 1 and "CacheUnavailableError" in down.output


def test_crd_cache_stats_sees_the_last_hits_of_an_idle_worker(redis_cluster):
    # Given a worker with the shared cache, which analyses a text and then the same text
    # again (a miss, then a hit) and then goes idle
    cache_url = redis_url(REDIS_CACHE_DB)
    flush_db(cache_url)
    redis_cluster.start_worker(1, REDIS_CACHE_URL=cache_url)
    redis_cluster.producer("""
        import json
        from redundancy.tasks import analyze_content
        text = "Cached once. Cached once."
        print(json.dumps([analyze_content.delay(text).get(timeout=60) for _ in range(2)][1]))
    """)

    # When crd cache stats reads the shared statistics, with no further work anywhere
    deadline = time.monotonic() + 30
    while True:
        out = redis_cluster.crd("cache", "stats", "--json", REDIS_CACHE_URL=cache_url)
        assert out.returncode == 0, out.stderr
        analysis = json.loads(out.stdout)["namespaces"].get("analysis", {})
        if analysis.get("hits") == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.3)

    # Then the worker's last hit is there (shared while it is idle, not at its shutdown)
    assert (analysis["hits"], analysis["misses"]) == (1, 1)
