"""The baseline of ``benchmarks.e2e_tasks``: what a user would write without this project.

A plain Celery app -- none of our settings, hooks, base class, cache or events -- with
a no-op task and a task calling the same pure ``redundancy.core.analyze`` our
``analyze_content`` calls (the core is the domain work, not our infrastructure).

    celery -A benchmarks.plain_celery worker -c 2 -Q plain

``PLAIN_CELERY_SETTINGS`` picks which of the settings our worker uses are added to
Celery's defaults: a comma-separated list of ``SETTING_GROUPS`` names, ``defaults`` for
none or ``ours`` for all of them (``OURS``). The broker and result backend come from
``CELERY_BROKER_URL`` / ``CELERY_RESULT_BACKEND`` (Celery's defaults keep no results,
which the benchmark needs to see a task finish).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from redundancy.core import analyze as core_analyze

QUEUE = "plain"

SETTING_GROUPS: dict[str, dict[str, Any]] = {
    # At-least-once: ack after the task, requeue when its process dies.
    "late_ack": {"task_acks_late": True, "task_reject_on_worker_lost": True},
    # One message in hand per process (ours on a worker that takes batch or corpus jobs;
    # a worker of the analysis queue alone keeps Celery's default, 4).
    "prefetch_1": {"worker_prefetch_multiplier": 1},
    # Task events for Flower and monitors (task-received/started/succeeded ...).
    "task_events": {"worker_send_task_events": True, "task_send_sent_event": True},
    # A STARTED state written to the result backend before each task runs.
    "track_started": {"task_track_started": True},
}
"""Settings of our worker that change the per-task work, by what they buy."""

OURS: tuple[str, ...] = ("late_ack", "track_started")
"""The groups ``redundancy.workers.celeryconfig`` sets on a worker of the analysis queue,
the benchmark's (a unit test keeps this list in step with it)."""


def settings_for(spec: str) -> dict[str, Any]:
    """Celery settings for ``spec`` (``defaults``, ``ours`` or group names, comma-separated)."""
    names = OURS if spec == "ours" else [n for n in spec.split(",") if n and n != "defaults"]
    conf: dict[str, Any] = {}
    for name in names:
        if name not in SETTING_GROUPS:
            raise SystemExit(f"PLAIN_CELERY_SETTINGS: unknown group {name!r} ({spec!r})")
        conf.update(SETTING_GROUPS[name])
    return conf


app = Celery(
    "plain",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/1"),
)
app.conf.update(
    task_default_queue=QUEUE, **settings_for(os.environ.get("PLAIN_CELERY_SETTINGS", "defaults"))
)


@app.task(name="plain.noop")
def noop(text: str, threshold: float = 0.8) -> dict[str, Any]:
    """Does nothing with its input: Celery's own cost per task."""
    return {"length": len(text)}


@app.task(name="plain.analyze")
def analyze(text: str, threshold: float = 0.8) -> dict[str, Any]:
    """The core's analysis, as a user would call it from a task of their own."""
    return core_analyze(text, threshold, workers=1).model_dump(mode="json")
