"""Celery's lowercase settings, built from ``redundancy.config``.

This is where every Celery setting the project relies on lives. The repository's root
``celeryconfig.py`` re-exports these for ops to override (see ``app.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from redundancy.config import REDIS_SCHEMES, Settings, get_settings
from redundancy.names import SHORT_JOB_QUEUES
from redundancy.retry import PUBLISH_RETRY
from redundancy.workers.routing import DEFAULT_QUEUE, TASK_ROUTES, task_queues

EMBEDDED_BROKER = "memory://localhost/"
"""In-process transport of the embedded default (a host named, or kombu warns on every
command that none was supplied)."""
EMBEDDED_BACKEND = "cache+memory://"
RESULT_BACKEND_CLASS = "redundancy.workers.results:RedisResultBackend"
"""Celery's Redis result backend storing each state in one round trip, with the job's
event (``redundancy.workers.results``); ``create_app`` names it before ``+redis://...``."""


def result_backend_class(result_backend: object) -> str | None:
    """The app's ``backend_cls`` for the ``result_backend`` Celery resolved (its
    CELERY_RESULT_BACKEND environment variable wins over any setting): ours in
    Celery's ``<backend>+<url>`` form for a plain Redis URL, else None (Celery's choice)."""
    if isinstance(result_backend, str) and urlsplit(result_backend).scheme in ("redis", "rediss"):
        return f"{RESULT_BACKEND_CLASS}+{result_backend}"
    return None


BROKER_TRANSPORT = "redundancy.workers.transport:Transport"
"""kombu's Redis transport with entries that are not a kombu envelope dead-lettered
instead of stopping the worker (``redundancy.workers.transport``)."""


def broker_transport(broker_url: object) -> str | None:
    """The app's ``broker_transport`` for the broker URL Celery resolved (its
    CELERY_BROKER_URL environment variable wins over any setting): ours for a plain Redis
    URL (an explicit transport, e.g. ``sentinel://`` or ``redis+socket://``, is kept)."""
    if isinstance(broker_url, str) and urlsplit(broker_url).scheme in ("redis", "rediss"):
        return BROKER_TRANSPORT
    return None


LONG_JOB_PREFETCH = 1
"""Messages each pool process keeps in hand on a worker that takes batch or corpus jobs:
one, so a long job never holds back others that an idle worker could run (Celery's
advice for long tasks)."""
SHORT_JOB_PREFETCH = 4
"""The same on a worker that consumes only ``SHORT_JOB_QUEUES`` (``-Q analysis``):
Celery's default. With one, a pool process finishing a job waits for the main process
to acknowledge it and fetch the next before it can start again; a few in hand keep it
busy. Measured: ``benchmarks.e2e_tasks`` (README "Per-task overhead")."""


def prefetch_multiplier(
    queues: str | Iterable[str] | None, settings: Settings | None = None
) -> int:
    """``worker_prefetch_multiplier`` for a worker consuming ``queues`` (Celery's ``-Q``:
    a list or a comma-separated string; empty means every queue): WORKER_PREFETCH_MULTIPLIER
    when set, else ``SHORT_JOB_PREFETCH`` for short-job queues only, else ``LONG_JOB_PREFETCH``.
    Acknowledgement stays late either way: a message in hand that a dead worker never
    ran is delivered again like the one it was running."""
    s = settings or get_settings()
    if s.worker_prefetch_multiplier is not None:
        return s.worker_prefetch_multiplier
    names = queues.split(",") if isinstance(queues, str) else list(queues or ())
    chosen = {str(n).strip() for n in names} - {""}
    return SHORT_JOB_PREFETCH if chosen and chosen <= SHORT_JOB_QUEUES else LONG_JOB_PREFETCH


def celery_settings(settings: Settings | None = None) -> dict[str, Any]:
    """The settings dict for ``Celery.config_from_object``."""
    s = settings or get_settings()
    broker = s.broker_url if s.broker_url and not s.embedded else EMBEDDED_BROKER
    conf: dict[str, Any] = {
        "broker_url": broker,
        "result_backend": s.result_backend_url if not s.embedded else EMBEDDED_BACKEND,
        # JSON only: never pickle (docs/architecture.md §7).
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # A message is acknowledged only after its task finished; a worker lost mid-task
        # puts it back on the queue. Messages in hand per process: ``prefetch_multiplier``,
        # chosen again from a worker's queues when it starts (``PrefetchForQueues``).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": prefetch_multiplier(None, s),
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": dict(PUBLISH_RETRY),
        "broker_connection_retry_on_startup": True,
        "task_time_limit": s.task_time_limit,
        "task_soft_time_limit": s.task_soft_time_limit,
        "task_queues": task_queues(dead_lettering=s.task_queue_dead_lettering),
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": TASK_ROUTES,
        # STARTED in the result backend before a task runs (callers and tests see a job
        # running, with its process id); ours stores it in the round trip that counts
        # the delivery for the poison guard (redundancy.workers.results), so it is free.
        "task_track_started": True,
        # Not result_extended: it would keep every input text (up to MAX_TEXT_CHARS) in the
        # result backend for a day; Flower shows arguments from task events instead.
        "result_extended": False,
        "result_expires": 86_400,
        # Task events (received/started/succeeded) are sent only while someone listens:
        # Flower turns them on in every worker it sees (its enable_events, every 5 s), as
        # does `celery control enable_events`; `crd worker -E` sends them always. Sent
        # unasked they cost the worker's main process ~0.7 ms of CPU per task (measured:
        # benchmarks.e2e_tasks --parts settings).
        "worker_send_task_events": False,
        "task_send_sent_event": True,
        "enable_utc": True,
        "timezone": "UTC",
        "imports": ("redundancy.tasks",),
        # Embedded default: the same task code runs in-process, synchronously.
        "task_always_eager": s.embedded,
    }
    if s.worker_concurrency:
        conf["worker_concurrency"] = s.worker_concurrency
    scheme = urlsplit(broker).scheme
    if scheme in REDIS_SCHEMES:
        # An unacknowledged message comes back after this long: it must exceed the
        # longest task plus retry back-off, or a slow task runs twice.
        conf["broker_transport_options"] = {"visibility_timeout": s.visibility_timeout}
    elif scheme.startswith(("amqp", "pyamqp")):
        conf["broker_transport_options"] = {"confirm_publish": True}
    return conf
