"""Celery signal handlers of the cache; ``register()`` connects them (``create_app`` does).

A prefork child leaves with ``os._exit`` (no ``atexit``), so it shares the statistics of
its last second when Celery says it is shutting down. A hook never fails anything.
"""

from __future__ import annotations

import logging
from typing import Any

from redundancy.cache import client

log = logging.getLogger("redundancy.cache")


def share_cache_stats(**_: Any) -> None:
    cache = client.current_cache()
    if cache is None:
        return
    try:
        cache.flush_stats()
    except Exception as exc:
        log.warning("could not share the cache statistics at shutdown: %s", exc)


def register() -> None:
    """Connect the handlers (idempotent: Celery keeps one connection per receiver)."""
    from celery.signals import worker_process_shutdown

    worker_process_shutdown.connect(share_cache_stats, weak=False)
