"""Helpers for the event integration tests: brokers per kind, collecting events."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from redundancy.events.brokers import EventBroker, create_broker

KAFKA_CONSUMER = {"session.timeout.ms": 6000}
"""Consumer groups join Tansu in ~3 s with this (~23 s with the default)."""


def unique_topic() -> str:
    return f"crd-test-{uuid.uuid4().hex[:10]}"


def make_broker(kind: str, url: str, topic: str, **options: Any) -> EventBroker:
    if kind == "kafka":
        options.setdefault("consumer_config", KAFKA_CONSUMER)
        url = url if url.startswith("kafka://") else f"kafka://{url}"
    return create_broker(url, topic=topic, **options)


def broker_env(kind: str, url: str, topic: str) -> dict[str, str]:
    """The environment a worker needs to send events to this broker."""
    variable = {
        "redis_streams": "REDIS_URL",
        "rabbitmq": "RABBITMQ_URL",
        "kafka": "KAFKA_BOOTSTRAP_SERVERS",
    }[kind]
    return {
        "MESSAGE_BROKER_TYPE": kind,
        variable: url.removeprefix("kafka://"),
        "EVENTS_TOPIC": topic,
    }


def collect(
    broker: EventBroker,
    want: int,
    *,
    group: str,
    within: float = 60.0,
    on_event: Callable[[Any], None] | None = None,
    **options: Any,
) -> list[Any]:
    """Consume as ``group`` until ``want`` distinct event ids arrived (or ``within`` s)."""
    got: list[Any] = []
    ids: set[Any] = set()
    stop = threading.Event()
    timer = threading.Timer(within, stop.set)
    timer.start()

    def handle(event: Any) -> None:
        got.append(event)
        ids.add(event.event_id)
        if on_event:
            on_event(event)
        if len(ids) >= want:
            stop.set()

    try:
        broker.consume_sync(handle, group=group, stop=stop, **options)
    finally:
        timer.cancel()
    return got


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached after {timeout} s (last: {value!r})")
        time.sleep(every)


def drop_rabbitmq_topic(url: str, topic: str, groups: list[str]) -> None:
    """Delete what a test declared in its vhost (exchanges and queues of one topic)."""
    from kombu import Connection

    with Connection(url) as conn:
        for queue in [f"{topic}.unrouted", *(f"{topic}.{g}" for g in groups)]:
            with contextlib.suppress(Exception):
                conn.channel().queue_delete(queue)
        for exchange in (topic, f"{topic}.unrouted"):
            with contextlib.suppress(Exception):
                conn.channel().exchange_delete(exchange)
