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
