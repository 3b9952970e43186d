"""Unit tests share one process: each starts from fresh process-wide state.

The settings cache, the process's shared resources (the results cache and session
manager, the job store and the outbox: in-memory twins on the embedded default), the
outbox's inline relay, and the memory event broker's topics are reset before every test
-- with the project's own reset functions. Only modules some test already imported are
touched (one not imported yet holds no state), so a test of the pure core pays nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest


def reset_process_state() -> None:
    modules = sys.modules
    if "redundancy.config" in modules:
        modules["redundancy.config"].get_settings.cache_clear()
    if "redundancy.config.overrides" in modules:
        modules["redundancy.config.overrides"].forget()
    if "redundancy.resources" in modules:  # cache, sessions, stores, outbox, relay
        modules["redundancy.resources"].reset()
    if "redundancy.events.brokers.memory" in modules:
        memory = modules["redundancy.events.brokers.memory"]
        with memory._TOPICS_LOCK:
            memory._TOPICS.clear()


@pytest.fixture(autouse=True)
def fresh_process_state() -> Iterator[None]:
    reset_process_state()
    yield
    reset_process_state()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set environment variables and re-read settings; restored afterwards (the shared
    resources built from them are forgotten by ``fresh_process_state``)."""

    def apply(**env: str) -> None:
        from redundancy.config import get_settings

        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield apply
    monkeypatch.undo()
    reset_process_state()
