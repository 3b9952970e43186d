"""Delivery counters: how often a task message came back (the poison-message guard of
``RedundancyTask.before_start``).

Job data, not batch data: every task counts its deliveries here. The counters live in the
job store's Redis (``Settings.job_store_url``, never evicted), with a TTL; the embedded
default, whose eager tasks are never redelivered, counts in memory. The client comes from
``redundancy.resources``, which makes it again in a forked child.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from redundancy import keys, resources
from redundancy.kv.counters import incr_with_ttl

DELIVERY_COUNTER_TTL = 86_400
"""Seconds a counter outlives its task's last delivery."""
DELIVERIES_COUNTED = "crd_deliveries"
"""Request attribute: this delivery's count, when the result backend counted it with the
task's STARTED state (``redundancy.workers.results``); the guard then skips its own trip."""


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
    """One counter key per attempt (``keys.delivery_counter``), INCR with a TTL.

    ``client``: the job store's redis-py client (``resources.jobs_client``).
    """

    def __init__(self, client: Any) -> None:
        self._redis = client

    def count(self, task_id: str, retries: int) -> int:
        key = keys.delivery_counter(task_id, retries)
        return incr_with_ttl(self._redis, key, DELIVERY_COUNTER_TTL)


def get_delivery_counter() -> DeliveryCounter:
    """This process's delivery counter: Redis on a cluster, in-process on the embedded
    default (``redundancy.resources`` decides, and makes it again in a forked child)."""
    return resources.shared("delivery_counter", _new_delivery_counter)


def _new_delivery_counter() -> DeliveryCounter:
    client = resources.jobs_client()
    return MemoryDeliveryCounter() if client is None else RedisDeliveryCounter(client)
