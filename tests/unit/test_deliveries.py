"""Delivery counters (the poison-message guard's memory) count each attempt apart."""

from __future__ import annotations

from redundancy import resources
from redundancy.workers.deliveries import (
    MemoryDeliveryCounter,
    RedisDeliveryCounter,
    get_delivery_counter,
)


def test_each_attempt_of_each_task_is_counted_on_its_own():
    # Given the embedded default's counter
    counter = get_delivery_counter()
    assert isinstance(counter, MemoryDeliveryCounter)
    # When task t's first attempt arrives twice, its retry once, and task u once
    counts = [counter.count("t", 0), counter.count("t", 0), counter.count("t", 1)]
    counts.append(counter.count("u", 0))
    # Then the redelivery is the second of attempt 0; the others are first deliveries
    assert counts == [1, 2, 1, 1]


def test_a_cluster_counts_with_the_job_stores_client(settings_env):
    # Given a Redis broker (its result backend holds the job data)
    settings_env(CELERY_BROKER_URL="redis://127.0.0.1:1/3")
    # Then deliveries are counted on Redis, through the one client of the job data
    counter = get_delivery_counter()
    assert isinstance(counter, RedisDeliveryCounter)
    assert counter._redis is resources.jobs_client()
