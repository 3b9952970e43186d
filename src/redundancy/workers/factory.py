"""``create_app()``: the Celery application, its settings and its hooks.

Importing this module builds nothing; ``redundancy.workers.app`` builds the process's
app on first use. Settings come from ``redundancy.workers.celeryconfig``; then, as
documented for ops, a ``celeryconfig`` module named by ``CELERY_CONFIG_MODULE`` -- or a
``celeryconfig.py`` in the working directory -- may override any of them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from celery import Celery

from redundancy.config import get_settings
from redundancy.workers.celeryconfig import celery_settings, result_backend_class

OVERRIDE_ENV = "CELERY_CONFIG_MODULE"

HOOK_MODULES: tuple[str, ...] = (
    "redundancy.cache.hooks",
    "redundancy.events.signals",
    "redundancy.observability.hooks",
)
"""Modules whose ``register()`` connects their Celery signal handlers (dramatiq's
``add_middleware``): the cache's statistics, the events' outbox writes and relay, and
metrics, tracing and logs. Importing one connects nothing; ``create_app`` registers each,
in producers and workers alike. Imported by name, after the metrics folder is chosen."""


def _override_module() -> ModuleType | None:
    name = os.environ.get(OVERRIDE_ENV)
    if name:
        return importlib.import_module(name)
    local = Path.cwd() / "celeryconfig.py"
    if local.is_file():
        spec = importlib.util.spec_from_file_location("celeryconfig", local)
        if spec and spec.loader:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    return None


def _overrides(module: ModuleType | None) -> dict[str, Any]:
    if module is None:
        return {}
    return {
        k: v
        for k, v in vars(module).items()
        if k.islower() and not k.startswith("_") and not callable(v)
        and not isinstance(v, ModuleType)
    }  # fmt: skip


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
    stored state)."""
    _prepare_metrics_folder()
    app = Celery("redundancy", task_cls="redundancy.workers.base:RedundancyTask")
    conf = celery_settings()
    conf.update(_overrides(_override_module()))
    app.config_from_object(conf)
    app.backend_cls = result_backend_class(app.conf.result_backend)
    for module in HOOK_MODULES:
        importlib.import_module(module).register()
    return app
