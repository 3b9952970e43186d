"""The plain-Celery baseline of ``benchmarks.e2e_tasks`` stays what it claims to be."""

from __future__ import annotations

from benchmarks.plain_celery import OURS, SETTING_GROUPS, settings_for

from redundancy.names import ANALYSIS_QUEUE
from redundancy.workers.celeryconfig import celery_settings, prefetch_multiplier


def test_the_plain_baseline_uses_exactly_the_celery_settings_our_worker_uses(settings_env):
    # Given the Celery settings of our worker of the analysis queue (the benchmark's)
    settings_env(CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    ours = celery_settings() | {"worker_prefetch_multiplier": prefetch_multiplier([ANALYSIS_QUEUE])}
    # Then a settings group of the plain app is in OURS exactly when our worker sets it all
    for name, group in SETTING_GROUPS.items():
        assert (name in OURS) == all(ours.get(k) == v for k, v in group.items()), name
    # and "ours" gives the plain app all of those settings, "defaults" none
    assert settings_for("ours") == {k: v for g in OURS for k, v in SETTING_GROUPS[g].items()}
    assert settings_for("defaults") == {}


def test_the_task_profile_leaves_a_sleeping_helper_thread_out_of_every_task():
    from benchmarks.task_profile import IDLE, LIBRARIES, OWNERS, classify, compiled

    owners, libraries = compiled(OWNERS), compiled(LIBRARIES)
    sleeping = [
        "Thread._bootstrap (threading.py:1002)",
        "_share_when_idle (redundancy/cache/hooks.py:26)",
    ]
    flushing = [*sleeping[:1], "_share_when_idle (redundancy/cache/hooks.py:30)",
                "SyncRedisCache.flush_stats (redundancy/cache/client.py:214)",
                "Connection.send_packed_command (redis/connection.py:1349)"]  # fmt: skip
    assert classify(sleeping, owners, libraries) == IDLE
    assert classify(flushing, owners, libraries) == "results cache (lookup, store)"
