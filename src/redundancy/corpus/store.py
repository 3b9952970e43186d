"""A corpus's event store: the source of truth its index is projected from.

Each shard of a corpus has its own ordered log, so each shard's projection advances on
its own and records one position:

* ``RedisStreamStore`` (``EVENT_STORE=redis``, the default): a Redis stream per shard
  (``keys.corpus_events``), beside the shard's index in the same hash slot and never
  trimmed. Appending happens inside the shard's apply script, atomically with the
  projection of the same events (``redundancy.corpus.scripts.APPLY``). Run Redis with
  AOF persistence (``appendonly yes``) so the store survives a restart.
* ``KafkaStore`` (``EVENT_STORE=kafka``): a topic per corpus (``CORPUS_KAFKA_TOPIC_PREFIX``
  + name) with one partition per shard and unlimited retention; positions are offsets.
  Events are produced first (acks=all, idempotent), then projected.

Positions are opaque strings ('' = before the first event); ``order`` compares them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redundancy import keys
from redundancy.core.corpus import CorpusConfig
from redundancy.corpus.connection import CorpusRedis
from redundancy.errors import InfrastructureError
from redundancy.events.errors import InvalidEventError
from redundancy.events.wire import WireMessage


@dataclass(frozen=True)
class StoredEvent:
    position: str
    message: WireMessage


class EventStore(Protocol):
    kind: str
    appends_with_apply: bool
    """True when events are appended by the index's apply script (the Redis store)."""

    def create(self, config: CorpusConfig) -> None: ...
    def drop(self, config: CorpusConfig) -> None: ...
    def append(
        self, config: CorpusConfig, shard: int, messages: Sequence[WireMessage]
    ) -> list[str]: ...
    def read(
        self, config: CorpusConfig, shard: int, after: str, limit: int
    ) -> list[StoredEvent]: ...
    def end(self, config: CorpusConfig, shard: int) -> str: ...
    def count(self, config: CorpusConfig, shard: int) -> int: ...
    def order(self, position: str) -> tuple[int, int]: ...


class RedisStreamStore:
    """A never-trimmed Redis stream per shard (module docstring)."""

    kind = "redis"
    appends_with_apply = True

    def __init__(self, redis: CorpusRedis) -> None:
        self.redis = redis

    def create(self, config: CorpusConfig) -> None:
        """Nothing to create: a shard's stream appears with its first event."""

    def drop(self, config: CorpusConfig) -> None:
        for shard in range(config.shards):
            self.redis.client.delete(keys.corpus_events(config.name, shard))

    def append(
        self, config: CorpusConfig, shard: int, messages: Sequence[WireMessage]
    ) -> list[str]:
        raise NotImplementedError("the Redis store appends inside the apply script")

    def read(self, config: CorpusConfig, shard: int, after: str, limit: int) -> list[StoredEvent]:
        start = f"({after}" if after else "-"
        entries = self.redis.client.xrange(
            keys.corpus_events(config.name, shard), min=start, max="+", count=limit
        )
        return [StoredEvent(_text(eid), _from_fields(fields)) for eid, fields in entries]

    def read_back(
        self, config: CorpusConfig, shard: int, before: str, limit: int
    ) -> list[StoredEvent]:
        """Up to ``limit`` events before ``before`` ('': the end), newest first."""
        end = f"({before}" if before else "+"
        entries = self.redis.client.xrevrange(
            keys.corpus_events(config.name, shard), max=end, min="-", count=limit
        )
        return [StoredEvent(_text(eid), _from_fields(fields)) for eid, fields in entries]

    def end(self, config: CorpusConfig, shard: int) -> str:
        last = self.redis.client.xrevrange(keys.corpus_events(config.name, shard), count=1)
        return _text(last[0][0]) if last else ""

    def count(self, config: CorpusConfig, shard: int) -> int:
        return int(self.redis.client.xlen(keys.corpus_events(config.name, shard)))

    def order(self, position: str) -> tuple[int, int]:
        if not position:
            return (-1, -1)
        ms, _, seq = position.partition("-")
        return (int(ms), int(seq or 0))


class KafkaStore:
    """A topic per corpus, a partition per shard, unlimited retention (module docstring)."""

    kind = "kafka"
    appends_with_apply = False
    IDLE_END = 0.25
    """Seconds without a record, past the high watermark, that end a read (see ``read``)."""
    TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}

    def __init__(self, bootstrap: str, topic_prefix: str, timeout: float = 15.0) -> None:
        from redundancy.events.brokers.kafka import _kafka

        _kafka()  # the install hint when confluent-kafka is missing
        self.bootstrap = bootstrap
        self.prefix = topic_prefix
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._producer: Any = None
        self._consumer: Any = None

    def _fresh_after_fork(self) -> None:
        """A forked child never uses its parent's Kafka clients (their threads are gone)."""
        if os.getpid() != self._pid:
            self._pid, self._producer, self._consumer = os.getpid(), None, None

    def topic(self, config: CorpusConfig) -> str:
        return f"{self.prefix}{config.name}"

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create(self, config: CorpusConfig) -> None:
        import confluent_kafka as ck
        from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

        topic = self.topic(config)
        admin = self._admin()  # held until the futures resolve (its handle serves them)
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=config.shards, config=dict(self.TOPIC_CONFIG))],
            operation_timeout=self.timeout,
            request_timeout=self.timeout,
        )
        try:
            futures[topic].result(timeout=self.timeout)
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise InfrastructureError(f"cannot create Kafka topic {topic}: {exc}") from exc

    def drop(self, config: CorpusConfig) -> None:
        import confluent_kafka as ck

        topic = self.topic(config)
        admin = self._admin()
        futures = admin.delete_topics([topic], operation_timeout=self.timeout)
        try:
            futures[topic].result(timeout=self.timeout)
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise InfrastructureError(f"cannot delete Kafka topic {topic}: {exc}") from exc

    def _producer_client(self) -> Any:
        import confluent_kafka as ck

        with self._lock:
            self._fresh_after_fork()
            if self._producer is None:
                self._producer = ck.Producer(
                    {
                        "bootstrap.servers": self.bootstrap,
                        "enable.idempotence": True,
                        "acks": "all",
                        "linger.ms": 2,
                        "message.timeout.ms": int(self.timeout * 1000),
                    }
                )
            return self._producer

    def append(
        self, config: CorpusConfig, shard: int, messages: Sequence[WireMessage]
    ) -> list[str]:
        """Produce to the shard's partition and wait: the offsets, in order."""
        producer = self._producer_client()
        offsets: list[int | None] = [None] * len(messages)
        errors: list[Any] = []

        def delivered(index: int) -> Any:
            def callback(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append(err)
                else:
                    offsets[index] = msg.offset()

            return callback

        topic = self.topic(config)
        for index, message in enumerate(messages):
            while True:
                try:
                    producer.produce(
                        topic,
                        value=message.body,
                        key=message.key,
                        partition=shard,
                        headers=list(message.transport_headers().items()),
                        on_delivery=delivered(index),
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(self.timeout + 1.0)
        if errors or any(o is None for o in offsets):
            raise InfrastructureError(
                f"Kafka did not confirm {sum(o is None for o in offsets)} of {len(messages)} "
                f"events to {topic}: {errors[0] if errors else 'timed out'}"
            )
        return [str(o) for o in offsets]

    def _consumer_client(self) -> Any:
        import uuid

        import confluent_kafka as ck

        self._fresh_after_fork()
        if self._consumer is None:
            self._consumer = ck.Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": f"crd-corpus-reader-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    # past the end is an error, not a jump back to the high watermark
                    "auto.offset.reset": "error",
                    "fetch.wait.max.ms": 50,  # the end is seen after 50 ms, not 500
                }
            )
        return self._consumer

    def _watermarks(self, config: CorpusConfig, shard: int) -> tuple[int, int]:
        import confluent_kafka as ck

        consumer = self._consumer_client()
        try:
            low, high = consumer.get_watermark_offsets(
                ck.TopicPartition(self.topic(config), shard), timeout=self.timeout
            )
        except ck.KafkaException as exc:
            raise InfrastructureError(f"Kafka unreachable at {self.bootstrap}: {exc}") from exc
        return int(low), int(high)

    def read(self, config: CorpusConfig, shard: int, after: str, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` events after ``after``, to the partition's end.

        The end is the broker's end-of-partition signal; past the high watermark, a fetch
        that stays empty for ``IDLE_END`` seconds ends the read too, because Tansu reports
        the last *batch's* base offset + 1 as high watermark (records after it are real
        and readable, but no end-of-partition follows them).
        """
        import time

        import confluent_kafka as ck

        start = int(after) + 1 if after else 0
        out: list[StoredEvent] = []
        end_codes = _end_codes()
        with self._lock:
            _, high = self._watermarks(config, shard)
            consumer = self._consumer_client()
            consumer.assign([ck.TopicPartition(self.topic(config), shard, start)])
            last = start - 1
            deadline = time.monotonic() + self.timeout
            try:
                while len(out) < limit:
                    past_high = last >= high - 1
                    msg = consumer.poll(self.IDLE_END if past_high else 0.5)
                    if msg is None:
                        if past_high:
                            break
                        if time.monotonic() > deadline:
                            raise InfrastructureError(
                                f"Kafka answered nothing for {self.topic(config)}[{shard}] "
                                f"at offset {last + 1} within {self.timeout} s"
                            )
                        continue
                    error = msg.error()
                    if error is not None:
                        if error.code() in end_codes:
                            break
                        raise InfrastructureError(f"Kafka read failed: {error}")
                    deadline = time.monotonic() + self.timeout
                    if msg.offset() >= start:
                        last = msg.offset()
                        out.append(StoredEvent(str(last), _wire(msg)))
            finally:
                consumer.unassign()
        return out

    def end(self, config: CorpusConfig, shard: int) -> str:
        """The last event's offset ('' when empty): read from the last batch's start."""
        with self._lock:
            _, high = self._watermarks(config, shard)
        if high == 0:
            return ""
        tail = self.read(config, shard, str(high - 2) if high > 1 else "", 1_000_000)
        return tail[-1].position if tail else str(high - 1)

    def count(self, config: CorpusConfig, shard: int) -> int:
        with self._lock:
            low, _ = self._watermarks(config, shard)
        end = self.end(config, shard)
        return int(end) + 1 - low if end else 0

    def order(self, position: str) -> tuple[int, int]:
        return (int(position), 0) if position else (-1, -1)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(5.0)
                self._producer = None
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def _end_codes() -> tuple[int, ...]:
    import confluent_kafka as ck

    return (
        ck.KafkaError._PARTITION_EOF,
        ck.KafkaError._AUTO_OFFSET_RESET,
        ck.KafkaError.OFFSET_OUT_OF_RANGE,
    )


def _wire(msg: Any) -> WireMessage:
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (msg.headers() or [])}
    key = msg.key()
    return WireMessage(
        event_id=str(headers.get("event_id", "")),
        event_type=str(headers.get("event_type", "")),
        key=key.decode() if isinstance(key, bytes) else str(key or ""),
        body=msg.value() or b"",
        signature=headers.get("signature"),
        timestamp=headers.get("timestamp"),  # signed with the body: verification needs it
    )


UNREADABLE = WireMessage(event_id="", event_type="", key="", body=b"", signature=None)
"""What an entry that is not an event reads as: ``.event()`` refuses it, and the
projector skips it at its position (``Corpus._event``)."""


def _from_fields(fields: Any) -> WireMessage:
    try:
        return WireMessage.from_fields(fields)
    except InvalidEventError:
        return UNREADABLE


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def store_from_settings(redis: CorpusRedis) -> EventStore:
    """The store ``EVENT_STORE`` names (one per process, like the Redis client)."""
    from redundancy.config import get_settings

    settings = get_settings()
    if settings.event_store == "kafka":
        global _kafka_store
        wanted = (settings.kafka_bootstrap_servers or "", settings.corpus_kafka_topic_prefix)
        if _kafka_store is None or (_kafka_store.bootstrap, _kafka_store.prefix) != wanted:
            if _kafka_store is not None:
                _kafka_store.close()
            _kafka_store = KafkaStore(*wanted)
        return _kafka_store
    return RedisStreamStore(redis)


_kafka_store: KafkaStore | None = None


def close_stores() -> None:
    """Close this process's Kafka store clients (tests; a process changing settings)."""
    global _kafka_store
    if _kafka_store is not None:
        _kafka_store.close()
        _kafka_store = None
