"""Celery signal handlers of the cache; ``register()`` connects them (``create_app`` does).

A process shares its cache statistics at most once a second, on its next cache
operation; so an idle pool process would keep its last second's counts to itself (``crd
cache stats`` would miss them until it works again). Each pool process therefore runs a
daemon thread that shares what is pending once the second has passed, and it shares the
rest when Celery says it is shutting down (a child leaves with ``os._exit``, no
``atexit``). A hook never fails anything.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from redundancy.cache import client
from redundancy.cache.core import STATS_FLUSH_INTERVAL

log = logging.getLogger("redundancy.cache")


def _share_when_idle() -> None:
    while True:
        time.sleep(STATS_FLUSH_INTERVAL)
        cache = client.current_cache()
        if cache is None or not cache.core.book.flush_due():
            continue
        try:
            cache.flush_stats()
        except Exception as exc:  # the next operation or the next second tries again
            log.debug("could not share the cache statistics: %s", exc)


def start_idle_sharing(**_: Any) -> None:
    """In a new pool process: the thread that shares an idle process's statistics."""
    threading.Thread(target=_share_when_idle, name="redundancy-cache-stats", daemon=True).start()


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
    from celery.signals import worker_process_init, worker_process_shutdown

    worker_process_init.connect(start_idle_sharing, weak=False)
    worker_process_shutdown.connect(share_cache_stats, weak=False)
