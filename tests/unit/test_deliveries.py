"""Delivery counters (the poison-message guard's memory) count each attempt apart."""

from __future__ import annotations

from redundancy.workers.deliveries import MemoryDeliveryCounter, get_delivery_counter


def test_each_attempt_of_each_task_is_counted_on_its_own():
    # Given the embedded default's counter
    counter = get_delivery_counter()
    assert isinstance(counter, MemoryDeliveryCounter)
    # When task t's first attempt arrives twice, its retry once, and task u once
    counts = [counter.count("t", 0), counter.count("t", 0), counter.count("t", 1)]
    counts.append(counter.count("u", 0))
    # Then the redelivery is the second of attempt 0; the others are first deliveries
    assert counts == [1, 2, 1, 1]
