"""RabbitMQ: a durable topic exchange, persistent messages, publisher confirms.

Exchange ``<EVENTS_TOPIC>`` (topic type), routing key = ``event_type``. A consumer group is
a durable queue ``<topic>.<group>`` bound to the types it wants (``#`` for all); one queue
keeps publish order. Messages no queue is bound for go to the alternate exchange and
wait in ``<topic>.unrouted`` instead of being dropped.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from typing import Any

from redundancy.events.brokers.base import Delivery, EventBroker, Reader
from redundancy.events.errors import BrokerUnavailableError, PublishRejectedError
from redundancy.events.wire import CONTENT_TYPE, WireMessage

PREFETCH = 100


class RabbitMQBroker(EventBroker):
    kind = "rabbitmq"

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.unrouted = f"{self.topic}.unrouted"
        self._conn: Any = None
        self._producer: Any = None

    def _connection(self) -> Any:
        from kombu.connection import Connection

        return Connection(
            self.url,
            connect_timeout=min(5.0, self.publish_timeout),
            transport_options={"confirm_publish": True},
        )

    def _exchange(self) -> Any:
        from kombu.entity import Exchange

        return Exchange(
            self.topic, type="topic", durable=True, arguments={"alternate-exchange": self.unrouted}
        )

    def _declare(self, channel: Any) -> None:
        from kombu.entity import Exchange, Queue

        unrouted = Exchange(self.unrouted, type="fanout", durable=True)
        unrouted(channel).declare()
        Queue(self.unrouted, unrouted, durable=True)(channel).declare()
        self._exchange()(channel).declare()

    def _open_channel(self) -> tuple[Any, Any]:
        """A new connection and a channel on it, with the exchange declared."""
        conn = self._connection()
        try:
            conn.ensure_connection(max_retries=1, timeout=self.publish_timeout)
            channel = conn.channel()
            self._declare(channel)
        except (OSError, *conn.connection_errors) as exc:
            conn.release()
            raise BrokerUnavailableError(f"RabbitMQ unreachable: {exc}") from exc
        return conn, channel

    def _connect(self) -> None:
        from kombu.messaging import Producer

        conn, channel = self._open_channel()
        self._conn = conn
        self._producer = Producer(channel, exchange=self._exchange())

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.release()
        self._conn = self._producer = None

    def _send(self, messages: Sequence[WireMessage]) -> None:
        from amqp.exceptions import MessageNacked

        errors = (
            OSError,
            socket.timeout,
            *self._conn.connection_errors,
            *self._conn.channel_errors,
        )
        for message in messages:
            try:
                self._producer.publish(
                    message.body,
                    routing_key=message.event_type,
                    delivery_mode=2,  # persistent
                    content_type=CONTENT_TYPE,
                    content_encoding="utf-8",
                    message_id=message.event_id,
                    headers={**message.transport_headers(), "key": message.key},
                    timeout=self.publish_timeout,
                    confirm_timeout=self.publish_timeout,
                )
            except MessageNacked as exc:
                raise PublishRejectedError(f"RabbitMQ refused event {message.event_id}") from exc
            except errors as exc:
                raise BrokerUnavailableError(f"publish to RabbitMQ failed: {exc!r}") from exc

    def _bindings(self, event_types: frozenset[str] | None) -> list[Any]:
        """The exchange bound by each wanted event type (routing key), or by all (``#``)."""
        from kombu.entity import binding

        keys = sorted(event_types) if event_types else ["#"]
        return [binding(self._exchange(), routing_key=k) for k in keys]

    def _queue(self, group: str, event_types: frozenset[str] | None) -> Any:
        from kombu.entity import Queue

        return Queue(f"{self.topic}.{group}", durable=True, bindings=self._bindings(event_types))

    def _ensure_group(self, group: str, event_types: frozenset[str] | None) -> None:
        self._queue(group, event_types)(self._conn.channel()).declare()

    def _open_reader(
        self,
        group: str | None,
        event_types: frozenset[str] | None,
        from_beginning: bool,
        consumer: str,
    ) -> Reader:
        from kombu.entity import Queue

        conn, channel = self._open_channel()
        if group is not None:
            queue = self._queue(group, event_types)
        else:  # a live tail: a private queue that disappears with the connection
            queue = Queue(exclusive=True, auto_delete=True, bindings=self._bindings(event_types))
        return _QueueReader(conn, channel, queue)


class _QueueReader(Reader):
    def __init__(self, conn: Any, channel: Any, queue: Any) -> None:
        from kombu.messaging import Consumer

        self._conn = conn
        self._buffer: list[Any] = []
        channel.basic_qos(0, PREFETCH, False)
        # on_message: the raw message (body bytes untouched), acknowledged by us later.
        self._consumer = Consumer(
            channel, queues=[queue], on_message=self._buffer.append, no_ack=False
        )
        self._consumer.consume()

    def fetch(self, limit: int, wait: float) -> list[Delivery]:
        if not self._buffer:
            with contextlib.suppress(TimeoutError):
                self._conn.drain_events(timeout=wait)
        taken, self._buffer[:] = self._buffer[:limit], self._buffer[limit:]
        return [_delivery(m) for m in taken]

    def ack(self, delivery: Delivery) -> None:
        delivery.token.ack()

    def close(self) -> None:
        self._conn.release()  # unacknowledged messages return to the queue


def _delivery(message: Any) -> Delivery:
    headers = message.headers or {}
    props = message.properties or {}
    try:
        wire = WireMessage(
            event_id=str(headers.get("event_id") or props.get("message_id")),
            event_type=str(headers.get("event_type") or message.delivery_info.get("routing_key")),
            key=str(headers.get("key", "")),
            body=message.body if isinstance(message.body, bytes) else str(message.body).encode(),
            signature=headers.get("signature"),
            timestamp=headers.get("timestamp"),
        )
    except Exception as exc:
        return Delivery(None, message, f"unreadable AMQP message: {exc}")
    return Delivery(wire, message)
