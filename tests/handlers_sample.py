"""Event handlers the handler tests run in real ``crd events handle`` processes
(``--module tests.handlers_sample``). Their side effects are counters in the Redis named
by ``HANDLER_SAMPLE_REDIS``, so a test can count what ran, in which process, how often."""

from __future__ import annotations

import os
import time
from typing import Any

from redundancy.events.handlers import handler
from redundancy.events.models import DomainEvent

RELEASE = "sample:release"
"""The slow handler waits for this key before it finishes."""


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["HANDLER_SAMPLE_REDIS"])


@handler("analysis.completed", name="slow-counter")
def slow_counter(event: DomainEvent) -> None:
    """Counts its starts, waits for the test's go, then counts its completions."""
    r = _redis()
    r.incr(f"sample:started:{event.event_id}")
    deadline = time.monotonic() + 120
    while not r.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.05)
    r.incr(f"sample:count:{event.event_id}")


@handler("analysis.completed", name="counter")
def counter(event: DomainEvent) -> None:
    _redis().incr(f"sample:healthy:{event.event_id}")


@handler("analysis.completed", name="always-fails", tries=3)
def always_fails(event: DomainEvent) -> None:
    _redis().incr(f"sample:fails:{event.event_id}")
    raise RuntimeError(f"always fails on {event.event_id}")


@handler("analysis.completed", name="until-fixed", tries=2)
def until_fixed(event: DomainEvent) -> None:
    """Fails until the test sets ``sample:fixed`` (a bug fixed, then a replay)."""
    r = _redis()
    if not r.exists("sample:fixed"):
        raise RuntimeError("not fixed yet")
    r.incr(f"sample:fixed-count:{event.event_id}")
