"""Unit tests share one process: each starts from fresh process-wide state.

The settings cache, the results cache and session manager (in-memory twins on the
embedded default), the memory job store, the memory outbox with its inline relay, and the
memory event broker's topics are reset before every test -- with the project's own reset
functions and constructors. Only modules some test already imported are touched (one not
imported yet holds no state), so a test of the pure core pays nothing for it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


def reset_process_state() -> None:
    modules = sys.modules
    if "redundancy.config" in modules:
        modules["redundancy.config"].get_settings.cache_clear()
    if "redundancy.cache.client" in modules:
        modules["redundancy.cache.client"].reset_cache()
    if "redundancy.sessions" in modules:
        modules["redundancy.sessions"].reset_session_manager()
    if "redundancy.workers.jobstore" in modules:
        jobstore = modules["redundancy.workers.jobstore"]
        jobstore._memory_store = jobstore.MemoryJobStore()
        jobstore._store = None  # the next get_job_store() picks the new one
    if "redundancy.events.outbox" in modules:
        outbox = modules["redundancy.events.outbox"]
        outbox._memory_outbox = outbox.MemoryOutbox()
        outbox._outbox = None
    if "redundancy.events.emitter" in modules:
        modules["redundancy.events.emitter"]._relay = None  # it held the previous outbox
    if "redundancy.events.brokers.memory" in modules:
        memory = modules["redundancy.events.brokers.memory"]
        with memory._TOPICS_LOCK:
            memory._TOPICS.clear()


@pytest.fixture(autouse=True)
def fresh_process_state() -> Iterator[None]:
    reset_process_state()
    yield
    reset_process_state()
