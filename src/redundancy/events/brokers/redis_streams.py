"""Redis Streams: XADD with a bounded approximate MAXLEN; readers in consumer groups.

One stream per topic (``redundancy:events:v1:stream:<EVENTS_TOPIC>``), so all events of an
aggregate keep their order. A consumer group member reads its own unacknowledged entries
first (after a restart), claims entries idle at dead members with XAUTOCLAIM, then reads
new ones; it XACKs each entry only after the handler returned.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redundancy import keys, resources
from redundancy.events.brokers.base import Delivery, EventBroker, Reader
from redundancy.events.errors import BrokerUnavailableError, InvalidEventError
from redundancy.events.wire import WireMessage

CLAIM_IDLE = 60.0
"""Seconds an entry may sit unacknowledged at a member before another member claims it."""


class RedisStreamBroker(EventBroker):
    kind = "redis_streams"

    def __init__(
        self,
        url: str,
        *,
        client: Any = None,
        maxlen: int | None = None,
        claim_idle: float = CLAIM_IDLE,
        **options: Any,
    ) -> None:
        """``client``: a redis-py client to use instead of the ones this broker makes
        (with the events role's timeouts, ``redundancy.resources``); its owner closes it."""
        from redundancy.config import get_settings

        super().__init__(url, **options)
        self.maxlen = maxlen or get_settings().events_stream_maxlen
        self.claim_idle = claim_idle
        self.stream = keys.event_stream(self.topic)
        self._given = client
        self._redis: Any = None

    def _client(self) -> Any:
        if self._given is not None:
            return _Unowned(self._given)
        return resources.redis_client(self.url, resources.Role.EVENTS, timeout=self.publish_timeout)

    def _connect(self) -> None:
        import redis

        client = self._client()
        try:
            client.ping()
        except redis.RedisError as exc:
            client.close()
            raise BrokerUnavailableError(f"Redis Streams broker unreachable: {exc}") from exc
        self._redis = client

    def _disconnect(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def _send(self, messages: Sequence[WireMessage]) -> None:
        import redis

        pipe = self._redis.pipeline(transaction=False)
        for message in messages:
            pipe.xadd(self.stream, message.fields(), maxlen=self.maxlen, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise BrokerUnavailableError(f"XADD to {self.stream} failed: {exc}") from exc

    def _ensure_group(self, group: str, event_types: frozenset[str] | None) -> None:
        _create_group(self._redis, self.stream, group)

    def _open_reader(
        self,
        group: str | None,
        event_types: frozenset[str] | None,
        from_beginning: bool,
        consumer: str,
    ) -> Reader:
        self.connect_sync()
        client = self._client()  # its own connection: a blocking read never holds up publishing
        if group is None:
            return _TailReader(client, self.stream, from_beginning)
        _create_group(client, self.stream, group)
        return _GroupReader(client, self.stream, group, consumer, self.claim_idle)


class _Unowned:
    """An injected client as this broker uses it: every call but ``close`` (its owner's)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def close(self) -> None:
        pass


def _create_group(client: Any, stream: str, group: str) -> None:
    """A new group starts at the oldest retained entry (like Kafka's earliest)."""
    import redis

    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _delivery(entry_id: bytes, fields: dict[bytes, bytes] | None) -> Delivery:
    if not fields:
        return Delivery(None, entry_id, f"entry {entry_id!r} was trimmed before it was read")
    try:
        return Delivery(WireMessage.from_fields(fields), entry_id)
    except InvalidEventError as exc:
        return Delivery(None, entry_id, str(exc))


class _GroupReader(Reader):
    def __init__(
        self, client: Any, stream: str, group: str, consumer: str, claim_idle: float
    ) -> None:
        self._redis, self._stream, self._group, self._consumer = client, stream, group, consumer
        self._claim_idle_ms = int(claim_idle * 1000)
        self._own_pending = True
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    def fetch(self, limit: int, wait: float) -> list[Delivery]:
        if self._own_pending:  # delivered to this consumer name before a restart
            entries = self._read("0", limit, None)
            if entries:
                return entries
            self._own_pending = False
        if time.monotonic() >= self._next_claim:
            claimed = self._claim(limit)
            if claimed:
                return claimed
        return self._read(">", limit, max(1, int(wait * 1000)))

    def _read(self, start: str, limit: int, block_ms: int | None) -> list[Delivery]:
        reply = self._redis.xreadgroup(
            self._group, self._consumer, {self._stream: start}, count=limit, block=block_ms
        )
        return [_delivery(i, f) for _, entries in reply or [] for i, f in entries]

    def _claim(self, limit: int) -> list[Delivery]:
        """Entries idle at other (dead) members longer than the claim time become ours."""
        reply = self._redis.xautoclaim(
            self._stream,
            self._group,
            self._consumer,
            self._claim_idle_ms,
            start_id=self._claim_cursor,
            count=limit,
        )
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._claim_cursor == "0-0":  # scanned the whole pending list
            self._next_claim = time.monotonic() + max(0.5, self._claim_idle_ms / 2000)
        return [_delivery(i, f) for i, f in entries]

    def ack(self, delivery: Delivery) -> None:
        self._redis.xack(self._stream, self._group, delivery.token)

    def close(self) -> None:
        self._redis.close()


class _TailReader(Reader):
    """No group: read from the current end (or the start) without acknowledging anything."""

    def __init__(self, client: Any, stream: str, from_beginning: bool) -> None:
        self._redis, self._stream = client, stream
        self._last: Any = "0-0"
        if not from_beginning:
            newest = client.xrevrange(stream, count=1)
            if newest:
                self._last = newest[0][0]

    def fetch(self, limit: int, wait: float) -> list[Delivery]:
        reply = self._redis.xread(
            {self._stream: self._last}, count=limit, block=max(1, int(wait * 1000))
        )
        out = [_delivery(i, f) for _, entries in reply or [] for i, f in entries]
        if out:
            self._last = out[-1].token
        return out

    def ack(self, delivery: Delivery) -> None:
        pass

    def close(self) -> None:
        self._redis.close()
