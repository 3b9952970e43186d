"""Kafka (confluent-kafka): idempotent producer, ``acks=all``, delivery callbacks.

One topic (``EVENTS_TOPIC``, default ``redundancy.events``) for every event type, keyed by
``aggregate_id``: all events of an aggregate land in one partition, in order, whatever
their type; consumers filter on the ``event_type`` header. The topic is created on first
connect (``EVENTS_KAFKA_PARTITIONS``, ``EVENTS_KAFKA_REPLICATION``) when missing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from redundancy.events.brokers.base import Delivery, EventBroker, Reader, Sending
from redundancy.events.errors import (
    BrokerUnavailableError,
    MissingClientLibraryError,
    PublishRejectedError,
)
from redundancy.events.wire import WireMessage

INSTALL_HINT = "pip install 'content-redundancy-detector[kafka]'"


def _kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError:
        raise MissingClientLibraryError(
            f"the Kafka event broker needs confluent-kafka: {INSTALL_HINT}"
        ) from None
    return confluent_kafka


class KafkaBroker(EventBroker):
    """``kafka://host:port[,host:port]`` or bare ``host:port`` lists (KAFKA_BOOTSTRAP_SERVERS).

    ``config`` adds librdkafka settings to every client (e.g. security), ``consumer_config``
    to consumers only (e.g. ``session.timeout.ms``).
    """

    kind = "kafka"
    confirms_async = True

    def __init__(
        self,
        url: str,
        *,
        config: dict[str, Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        from redundancy.config import get_settings

        _kafka()  # fail early with the install hint
        super().__init__(url if "://" in url else f"kafka://{url}", **options)
        self.bootstrap = self.url.removeprefix("kafka://").strip("/")
        settings = get_settings()
        self.partitions = settings.events_kafka_partitions
        self.replication = settings.events_kafka_replication
        self.config = dict(config or {})
        self.consumer_config = dict(consumer_config or {})
        self._producer: Any = None
        self._pending: list[Sending] = []
        """What ``send_async`` handed over since the last flush (a flush settles them)."""

    def _base(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **self.config}

    def _connect(self) -> None:
        ck = _kafka()
        timeout_ms = int(self.publish_timeout * 1000)
        producer = ck.Producer(
            {
                **self._base(),
                "enable.idempotence": True,  # no duplicates or reordering from internal retries
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": timeout_ms,  # a delivery report (ok or error) within this
                "socket.connection.setup.timeout.ms": min(timeout_ms, 10_000),
            }
        )
        try:
            metadata = producer.list_topics(timeout=min(self.publish_timeout, 10.0))
            if self.topic not in metadata.topics:
                self._create_topic(ck)
        except ck.KafkaException as exc:
            raise BrokerUnavailableError(f"Kafka unreachable at {self.bootstrap}: {exc}") from exc
        self._producer = producer

    def _create_topic(self, ck: Any) -> None:
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewTopic

        admin = AdminClient(self._base())
        futures = admin.create_topics(
            [
                NewTopic(
                    self.topic, num_partitions=self.partitions, replication_factor=self.replication
                )
            ],
            operation_timeout=self.publish_timeout,
            request_timeout=self.publish_timeout,
        )
        try:
            futures[self.topic].result(timeout=self.publish_timeout)
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise

    def _disconnect(self) -> None:
        if self._producer is not None:
            self._producer.flush(min(self.publish_timeout, 5.0))
            self._producer = None
        self._give_up_pending()

    def _send(self, messages: Sequence[WireMessage]) -> None:
        sending = _Reports(self.kind, len(messages), metered=False)  # send_sync counts
        self._send_async(messages, sending)
        self._flush()
        if sending.error is not None:
            raise sending.error

    def _send_async(self, messages: Sequence[WireMessage], sending: Sending) -> None:
        """``produce`` each message; librdkafka batches them and reports each delivery to
        ``sending`` (idempotent producer: in order per partition, no internal duplicates)."""

        on_delivery = sending if isinstance(sending, _Reports) else _Reports.forward(sending)
        for message in messages:
            headers = list(message.transport_headers().items())
            while True:
                try:
                    self._producer.produce(
                        self.topic,
                        value=message.body,
                        key=message.key,
                        headers=headers,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry
                    self._producer.poll(0.1)
        self._pending.append(sending)

    def _sending(self, count: int) -> Sending:
        return _Reports(self.kind, count)

    def _poll(self, timeout: float) -> None:
        self._producer.poll(timeout)
        self._pending = [s for s in self._pending if not s.settled]

    def _flush(self) -> None:
        # message.timeout.ms bounds every message, so after this every report has arrived;
        # one that has not (the client was closed) is a failure.
        self._producer.flush(self.publish_timeout + 1.0)
        self._give_up_pending()

    def _give_up_pending(self) -> None:
        pending, self._pending = self._pending, []
        for sending in pending:
            sending.give_up(
                BrokerUnavailableError(
                    f"Kafka did not confirm {sending.unconfirmed} of {sending.count} events: "
                    "timed out"
                )
            )

    def _consumer(self, group: str, extra: dict[str, Any]) -> Any:
        return _kafka().Consumer(
            {
                **self._base(),
                "group.id": group,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,  # only offsets we stored after the handler
                "auto.offset.reset": "earliest",
                **self.consumer_config,
                **extra,
            }
        )

    def _ensure_group(self, group: str, event_types: frozenset[str] | None) -> None:
        """Kafka keeps the log: a new group reads from the earliest retained event anyway."""

    def _open_reader(
        self,
        group: str | None,
        event_types: frozenset[str] | None,
        from_beginning: bool,
        consumer: str,
    ) -> Reader:
        ck = _kafka()
        self.connect_sync()  # makes sure the topic exists
        if group is not None:
            client = self._consumer(group, {"client.id": consumer})
            client.subscribe([self.topic])
            return _KafkaReader(client, committed=True)
        # A tail: every partition assigned directly (no group join), from the end or start.
        client = self._consumer(f"crd-tail-{uuid.uuid4().hex}", {"enable.auto.commit": False})
        metadata = client.list_topics(self.topic, timeout=self.publish_timeout)
        offset = ck.OFFSET_BEGINNING if from_beginning else ck.OFFSET_END
        client.assign(
            [
                ck.TopicPartition(self.topic, p, offset)
                for p in metadata.topics[self.topic].partitions
            ]
        )
        return _KafkaReader(client, committed=False)


class _Reports(Sending):
    """A ``Sending`` that is its messages' delivery callback: one call per event, so the
    success path is two operations (librdkafka calls it from ``poll``/``flush``)."""

    def __call__(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.unconfirmed -= 1
            if not self.unconfirmed:
                self._counted()
        else:
            self.report(_failure(err))

    @staticmethod
    def forward(sending: Sending) -> Any:
        def on_delivery(err: Any, _msg: Any) -> None:
            sending.report(None if err is None else _failure(err))

        return on_delivery


def _failure(err: Any) -> Exception:
    """A failed delivery report as the relay's error: refused for good, or retry."""
    ck = _kafka()
    if not err.retriable() and err.code() in (
        ck.KafkaError.MSG_SIZE_TOO_LARGE,
        ck.KafkaError.INVALID_MSG,
        ck.KafkaError.INVALID_MSG_SIZE,
        ck.KafkaError.RECORD_LIST_TOO_LARGE,
    ):
        return PublishRejectedError(f"Kafka refused an event: {err}")
    return BrokerUnavailableError(f"Kafka did not confirm an event: {err}")


class _KafkaReader(Reader):
    def __init__(self, client: Any, committed: bool) -> None:
        self._client = client
        self._committed = committed

    def fetch(self, limit: int, wait: float) -> list[Delivery]:
        out = []
        for msg in self._client.consume(num_messages=limit, timeout=wait):
            if msg.error():
                if not msg.error().retriable() and msg.error().fatal():
                    raise BrokerUnavailableError(f"Kafka consumer failed: {msg.error()}")
                continue  # partition EOF and transient errors
            out.append(_delivery(msg))
        return out

    def ack(self, delivery: Delivery) -> None:
        if self._committed:
            self._client.store_offsets(message=delivery.token)

    def close(self) -> None:
        self._client.close()  # commits the stored offsets


def _delivery(msg: Any) -> Delivery:
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (msg.headers() or [])}
    key = msg.key()
    try:
        wire = WireMessage(
            event_id=str(headers["event_id"]),
            event_type=str(headers["event_type"]),
            key=key.decode() if isinstance(key, bytes) else str(key or ""),
            body=msg.value() or b"",
            signature=headers.get("signature"),
            timestamp=headers.get("timestamp"),
        )
    except KeyError as exc:
        return Delivery(None, msg, f"Kafka message without header {exc}")
    return Delivery(wire, msg)
