"""Delivery counters: how often a task message came back (the poison-message guard of
``RedundancyTask.before_start``).

Job data, not batch data: every task counts its deliveries here. The counters live in the
job store's Redis (``Settings.job_store_url``, never evicted), with a TTL; the embedded
default, whose eager tasks are never redelivered, counts in memory. Clients are made
lazily per process, so a prefork child never inherits its parent's sockets.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

from redundancy import keys
from redundancy.config import get_settings

DELIVERY_COUNTER_TTL = 86_400
"""Seconds a counter outlives its task's last delivery."""


class DeliveryCounter(Protocol):
    def count(self, task_id: str, retries: int) -> int:
        """Count one delivery of attempt ``retries`` of ``task_id``; the count so far."""
        ...


class MemoryDeliveryCounter:
    """In-process twin for the embedded default and unit tests."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def count(self, task_id: str, retries: int) -> int:
        key = keys.delivery_counter(task_id, retries)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            return self._counts[key]


class RedisDeliveryCounter:
    """One counter key per attempt (``keys.delivery_counter``), INCR with a TTL."""

    def __init__(self, url: str) -> None:
        import redis  # imported here so the embedded default never needs a server

        # Explicit timeouts: every task start counts its delivery here, and a Redis that
        # accepts but never answers must not hold a task until its time limit.
        self._redis = redis.Redis.from_url(
            url, health_check_interval=30, socket_connect_timeout=5, socket_timeout=10
        )

    def count(self, task_id: str, retries: int) -> int:
        key = keys.delivery_counter(task_id, retries)
        pipe = self._redis.pipeline(transaction=False)  # INCR and renew the TTL: one trip
        pipe.incr(key)
        pipe.expire(key, DELIVERY_COUNTER_TTL)
        count, _ = pipe.execute()
        return int(count)


_counter: DeliveryCounter | None = None
_counter_pid: int | None = None


def get_delivery_counter() -> DeliveryCounter:
    """This process's delivery counter (a new Redis client after every fork)."""
    global _counter, _counter_pid
    if _counter is None or _counter_pid != os.getpid():
        url = get_settings().job_store_url
        embedded = get_settings().embedded
        _counter = RedisDeliveryCounter(url) if url and not embedded else MemoryDeliveryCounter()
        _counter_pid = os.getpid()
    return _counter
