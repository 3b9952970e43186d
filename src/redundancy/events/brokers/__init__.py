"""Broker backends, chosen by URL scheme (or MESSAGE_BROKER_TYPE) from a table of
``"module:Class"`` strings imported only when used (kombu's convention).

    create_broker("redis://localhost:6379/3")       # RedisStreamBroker
    create_broker("kafka://localhost:9092")          # KafkaBroker (needs the kafka extra)
    broker_from_settings()                           # what the environment configures
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any
from urllib.parse import urlsplit

from redundancy.config import Settings, get_settings
from redundancy.errors import ConfigurationError
from redundancy.events.brokers.base import Delivery, EventBroker, Reader, SeenIds

BACKENDS: dict[str, str] = {
    "memory": "redundancy.events.brokers.memory:InMemoryBroker",
    "redis": "redundancy.events.brokers.redis_streams:RedisStreamBroker",
    "rediss": "redundancy.events.brokers.redis_streams:RedisStreamBroker",
    "unix": "redundancy.events.brokers.redis_streams:RedisStreamBroker",
    "amqp": "redundancy.events.brokers.rabbitmq:RabbitMQBroker",
    "amqps": "redundancy.events.brokers.rabbitmq:RabbitMQBroker",
    "kafka": "redundancy.events.brokers.kafka:KafkaBroker",
}
"""URL scheme -> backend."""


def backend_class(scheme: str) -> type[EventBroker]:
    """The class for a URL scheme, imported now; unknown schemes get a did-you-mean."""
    path = BACKENDS.get(scheme)
    if path is None:
        close = difflib.get_close_matches(scheme, list(BACKENDS), n=1)
        hint = f" (did you mean {close[0]}://?)" if close else ""
        raise ConfigurationError(
            f"unknown event broker scheme {scheme!r}{hint}; expected one of "
            f"{', '.join(s + '://' for s in BACKENDS)}"
        )
    module, _, name = path.partition(":")
    cls: type[EventBroker] = getattr(importlib.import_module(module), name)
    return cls


def create_broker(url: str, **options: Any) -> EventBroker:
    """A broker for ``url`` (not yet connected)."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    if not scheme:
        raise ConfigurationError(f"event broker URL {url!r} has no scheme (redis://, kafka://...)")
    return backend_class(scheme)(url, **options)


def broker_url(settings: Settings | None = None) -> str:
    """Where events go: MESSAGE_BROKER_TYPE's URL; unset, memory in the embedded default
    and Redis Streams (REDIS_URL, else the result backend's Redis) on a cluster."""
    s = settings or get_settings()
    kind = s.message_broker_type or ("memory" if s.embedded else "redis_streams")
    if kind == "memory":
        return "memory://"
    if kind == "kafka":
        return f"kafka://{s.kafka_bootstrap_servers}"
    if kind == "rabbitmq":
        return str(s.rabbitmq_url)
    url = s.redis_url or s.job_store_url
    if not url:
        raise ConfigurationError("MESSAGE_BROKER_TYPE=redis_streams needs REDIS_URL")
    return url


def broker_from_settings(settings: Settings | None = None, **options: Any) -> EventBroker:
    return create_broker(broker_url(settings), **options)


__all__ = [
    "BACKENDS",
    "Delivery",
    "EventBroker",
    "Reader",
    "SeenIds",
    "backend_class",
    "broker_from_settings",
    "broker_url",
    "create_broker",
]
