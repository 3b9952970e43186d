"""The outbox: events of finished jobs, written durably before the job's message is acked.

In a cluster it is a Redis Stream (``redundancy:events:v1:outbox``) in the result
backend's Redis -- the store a job's result already depends on, run without eviction --
so writing an event adds no new service a job can fail on. The stream is never trimmed:
its length is the backlog. The embedded default keeps an in-process list instead.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from redundancy import keys, resources
from redundancy.events import metrics
from redundancy.events.errors import BrokerUnavailableError
from redundancy.events.wire import WireMessage
from redundancy.kv.lease import Lease, LocalLease, RedisLease
from redundancy.retry import OUTBOX_WRITE_RETRY

log = logging.getLogger(__name__)

DEAD_LETTER_MAXLEN = 10_000

Entry = tuple[str, dict[Any, Any]]


class Outbox(Protocol):
    durable: bool

    def append(self, message: WireMessage) -> None: ...
    def append_many(self, messages: Sequence[WireMessage]) -> None: ...
    def peek(self, count: int, after: str | None = None) -> list[Entry]: ...
    def remove(self, entry_ids: list[str]) -> None: ...
    def remove_through(self, entry_id: str) -> None: ...
    def dead_letter(self, entry_id: str, fields: dict[Any, Any], reason: str) -> None: ...
    def wait(self, after: str | None, timeout: float) -> None: ...
    def backlog(self) -> int: ...
    def oldest_age(self) -> float | None: ...
    def dead_letters(self) -> int: ...
    def lease(self, ttl: float) -> Lease: ...


def _ms_of(entry_id: str | bytes) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


class RedisOutbox:
    """The outbox on ``client`` (injected), or on a new client of ``url`` made with the
    job role's timeouts (``redundancy.resources``)."""

    durable = True

    def __init__(self, url: str | None = None, *, client: Any = None) -> None:
        if client is None:
            if url is None:
                raise TypeError("RedisOutbox needs a url or a client")
            client = resources.redis_client(url, resources.Role.JOBS)
        self._redis = client
        self.key = keys.outbox()

    def append(self, message: WireMessage) -> None:
        """XADD, retried briefly (``OUTBOX_WRITE_RETRY``): a short Redis blip must not
        lose the event."""
        self.append_many([message])

    def append_many(self, messages: Sequence[WireMessage]) -> None:
        """``append`` for several events, in order, in one round trip (all or, after a
        failed try, possibly some twice: consumers drop a repeated ``event_id``)."""
        import redis

        for attempt in itertools.count(1):
            try:
                if len(messages) == 1:
                    self._redis.xadd(self.key, messages[0].fields())
                else:
                    pipe = self._redis.pipeline(transaction=True)
                    for message in messages:
                        pipe.xadd(self.key, message.fields())
                    pipe.execute()
                metrics.OUTBOX_WRITTEN.inc(len(messages))
                return
            except redis.RedisError as exc:
                if not OUTBOX_WRITE_RETRY.retries_after(attempt):
                    raise BrokerUnavailableError(f"outbox write failed: {exc}") from exc
                time.sleep(OUTBOX_WRITE_RETRY.delay(attempt))

    def peek(self, count: int, after: str | None = None) -> list[Entry]:
        """The oldest ``count`` entries, or the ``count`` after entry ``after``."""
        start = "-" if after is None else f"({after}"
        return [(i.decode(), f) for i, f in self._redis.xrange(self.key, start, count=count)]

    def remove(self, entry_ids: list[str]) -> None:
        if entry_ids:
            self._redis.xdel(self.key, *entry_ids)

    def remove_through(self, entry_id: str) -> None:
        """Remove the oldest entries up to ``entry_id`` included: a relayed batch. One
        ``XTRIM MINID`` (entries below the next id) instead of an ``XDEL`` listing every
        id; stream ids only grow, so nothing written later can fall below it."""
        ms, _, seq = entry_id.partition("-")
        self._redis.xtrim(self.key, minid=f"{ms}-{int(seq or 0) + 1}", approximate=False)

    def dead_letter(self, entry_id: str, fields: dict[Any, Any], reason: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.xadd(
            keys.outbox_dead_letters(),
            {**fields, "reason": reason, "outbox_id": entry_id},
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )
        pipe.xdel(self.key, entry_id)
        pipe.execute()

    def wait(self, after: str | None, timeout: float) -> None:
        """Block until an entry newer than ``after`` arrives (or ``timeout``)."""
        self._redis.xread({self.key: after or "$"}, count=1, block=max(1, int(timeout * 1000)))

    def backlog(self) -> int:
        return int(self._redis.xlen(self.key))

    def oldest_age(self) -> float | None:
        first = self._redis.xrange(self.key, count=1)
        if not first:
            return None
        return max(0.0, time.time() - _ms_of(first[0][0]) / 1000)

    def dead_letters(self) -> int:
        return int(self._redis.xlen(keys.outbox_dead_letters()))

    def lease(self, ttl: float) -> Lease:
        """The relays' leadership lease (one relay drains the outbox at a time)."""
        return RedisLease(self._redis, keys.relay_lease(), ttl)


class MemoryOutbox:
    """The embedded default's outbox: a list in this process (lost when it exits)."""

    durable = False

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._dead: list[Entry] = []
        self._ids = itertools.count(1)
        self._changed = threading.Condition()

    def append(self, message: WireMessage) -> None:
        self.append_many([message])

    def append_many(self, messages: Sequence[WireMessage]) -> None:
        with self._changed:
            for message in messages:
                self._entries.append(
                    (f"{int(time.time() * 1000)}-{next(self._ids)}", dict(message.fields()))
                )
            self._changed.notify_all()
        metrics.OUTBOX_WRITTEN.inc(len(messages))

    def peek(self, count: int, after: str | None = None) -> list[Entry]:
        with self._changed:
            start = 0
            if after is not None:
                ids = [e[0] for e in self._entries]
                start = ids.index(after) + 1 if after in ids else len(ids)
            return list(self._entries[start : start + count])

    def remove(self, entry_ids: list[str]) -> None:
        gone = set(entry_ids)
        with self._changed:
            self._entries = [e for e in self._entries if e[0] not in gone]

    def remove_through(self, entry_id: str) -> None:
        with self._changed:
            for i, (eid, _) in enumerate(self._entries):
                if eid == entry_id:
                    del self._entries[: i + 1]
                    return

    def dead_letter(self, entry_id: str, fields: dict[Any, Any], reason: str) -> None:
        with self._changed:
            self._dead.append((entry_id, {**fields, "reason": reason}))
        self.remove([entry_id])

    def wait(self, after: str | None, timeout: float) -> None:
        with self._changed:
            if not self._entries:
                self._changed.wait(timeout)

    def backlog(self) -> int:
        return len(self._entries)

    def oldest_age(self) -> float | None:
        with self._changed:
            if not self._entries:
                return None
            return max(0.0, time.time() - _ms_of(self._entries[0][0]) / 1000)

    def dead_letters(self) -> int:
        return len(self._dead)

    def lease(self, ttl: float) -> Lease:
        return LocalLease()


def get_outbox() -> Outbox:
    """This process's outbox: Redis (the job store's) on a cluster, in-memory on the
    embedded default (``redundancy.resources`` decides, and makes it again after a fork)."""
    return resources.shared("outbox", _new_outbox)


def _new_outbox() -> Outbox:
    client = resources.jobs_client()
    return MemoryOutbox() if client is None else RedisOutbox(client=client)
