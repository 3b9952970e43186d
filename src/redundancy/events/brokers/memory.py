"""In-process broker: the embedded default and unit tests. Events live as long as the process."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from redundancy.events.brokers.base import Delivery, EventBroker, Reader
from redundancy.events.models import DomainEvent
from redundancy.events.wire import WireMessage


class _Log:
    """One topic: an append-only list, group offsets, and a condition to wait on."""

    def __init__(self) -> None:
        self.messages: list[WireMessage] = []
        self.offsets: dict[str, int] = {}
        self.changed = threading.Condition()


_TOPICS: dict[str, _Log] = {}
_TOPICS_LOCK = threading.Lock()


def _log(name: str) -> _Log:
    with _TOPICS_LOCK:
        return _TOPICS.setdefault(name, _Log())


class InMemoryBroker(EventBroker):
    """Events in a list per topic (shared by every instance with that URL and topic).

    ``memory://`` for the shared log of this process, ``memory://<name>`` for a separate one.
    """

    kind = "memory"

    def __init__(self, url: str = "memory://", **options: object) -> None:
        super().__init__(url, **options)  # type: ignore[arg-type]
        self._log = _log(f"{url}#{self.topic}")

    def _connect(self) -> None:
        pass

    def _disconnect(self) -> None:
        pass

    def _send(self, messages: Sequence[WireMessage]) -> None:
        with self._log.changed:
            self._log.messages.extend(messages)
            self._log.changed.notify_all()

    def _ensure_group(self, group: str, event_types: frozenset[str] | None) -> None:
        with self._log.changed:
            self._log.offsets.setdefault(group, 0)

    def _open_reader(
        self,
        group: str | None,
        event_types: frozenset[str] | None,
        from_beginning: bool,
        consumer: str,
    ) -> Reader:
        return _MemoryReader(self._log, group, from_beginning)

    # Helpers for tests and the embedded default.

    @property
    def messages(self) -> list[WireMessage]:
        with self._log.changed:
            return list(self._log.messages)

    def events(self, event_type: str | None = None) -> list[DomainEvent]:
        """Every event published so far (optionally of one type), parsed."""
        return [m.event() for m in self.messages if event_type in (None, m.event_type)]

    def clear(self) -> None:
        with self._log.changed:
            self._log.messages.clear()
            self._log.offsets.clear()


class _MemoryReader(Reader):
    def __init__(self, log: _Log, group: str | None, from_beginning: bool) -> None:
        self._log = log
        self._group = group
        with log.changed:
            if group is not None:
                self._next = log.offsets.setdefault(group, 0)
            else:
                self._next = 0 if from_beginning else len(log.messages)

    def fetch(self, limit: int, wait: float) -> list[Delivery]:
        with self._log.changed:
            if self._group is not None:
                self._next = self._log.offsets[self._group]
            if self._next >= len(self._log.messages):
                self._log.changed.wait(wait)
            end = min(len(self._log.messages), self._next + limit)
            out = [Delivery(self._log.messages[i], i) for i in range(self._next, end)]
            self._next = end
            return out

    def ack(self, delivery: Delivery) -> None:
        if self._group is not None:
            with self._log.changed:
                offset = self._log.offsets.get(self._group, 0)
                self._log.offsets[self._group] = max(offset, int(delivery.token) + 1)
