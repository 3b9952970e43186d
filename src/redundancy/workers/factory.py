"""``create_app()``: the Celery application, its settings and its hooks.

Importing this module builds nothing; ``redundancy.workers.app`` builds the process's
app on first use. Settings come from ``redundancy.workers.celeryconfig``; then the ops
module named by ``CELERY_CONFIG_MODULE``, if any, overrides any of them (never a module
found implicitly in the working directory: ``redundancy.config.overrides``).
"""

from __future__ import annotations

import importlib

from celery import Celery

from redundancy.config import get_settings
from redundancy.config.overrides import celery_overrides
from redundancy.workers.celeryconfig import (
    broker_transport,
    celery_settings,
    result_backend_class,
)
from redundancy.workers.prefetch import PrefetchForQueues
from redundancy.workers.resultrepr import install as install_result_text

HOOK_MODULES: tuple[str, ...] = (
    "redundancy.cache.hooks",
    "redundancy.events.signals",
    "redundancy.observability.hooks",
)
"""Modules whose ``register()`` connects their Celery signal handlers (dramatiq's
``add_middleware``): the cache's statistics, the events' outbox writes and relay, and
metrics, tracing and logs. Importing one connects nothing; ``create_app`` registers each,
in producers and workers alike, and adds the worker consumer bootsteps a module lists in
``CONSUMER_STEPS``. Imported by name, after the metrics folder is chosen."""


def _prepare_metrics_folder() -> None:
    """With a worker metrics port, switch prometheus_client to multiprocess files.

    This must precede the first import of prometheus_client in the process, i.e. the
    hook modules (ours, the events' and the cache's metrics), so it runs first.
    """
    settings = get_settings()
    if settings.worker_metrics_port is not None:
        from redundancy.observability.multiproc import enable_multiprocess

        enable_multiprocess(settings.metrics_dir)


def create_app() -> Celery:
    """Build an app from settings plus the ops override module, if any, and register
    every hook (``register()`` is idempotent, so a second app adds no second handler).
    A Redis result backend is ours (``redundancy.workers.results``: one round trip per
    stored state), and so is a Redis broker's transport (``redundancy.workers.transport``:
    an entry that is not a task envelope is dead-lettered, not fatal)."""
    _prepare_metrics_folder()
    app = Celery(
        "redundancy",
        task_cls="redundancy.workers.base:RedundancyTask",
        amqp="redundancy.workers.argsrepr:SummarizingAMQP",  # argument summaries, not texts
    )
    conf = celery_settings()
    overrides = celery_overrides()
    conf.update(overrides)
    app.config_from_object(conf)
    if "worker_prefetch_multiplier" not in overrides:  # the ops module's choice stands
        app.steps["worker"].add(PrefetchForQueues)
    app.backend_cls = result_backend_class(app.conf.result_backend)
    if not app.conf.broker_transport:
        app.conf.broker_transport = broker_transport(app.conf.broker_url)
    install_result_text()
    for module in HOOK_MODULES:
        hooks = importlib.import_module(module)
        hooks.register()
        app.steps["consumer"].update(getattr(hooks, "CONSUMER_STEPS", ()))
    return app
