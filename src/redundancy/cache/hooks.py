"""Celery signal handlers of the cache (listed in ``HOOK_MODULES``).

A prefork child leaves with ``os._exit`` (no ``atexit``), so it shares the statistics of
its last second when Celery says it is shutting down. A hook never fails anything.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_shutdown

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


worker_process_shutdown.connect(share_cache_stats, weak=False)
