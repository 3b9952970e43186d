"""Domain events of finished jobs, and the brokers that carry them.

    from redundancy.events import EventPublisher, RedisStreamBroker, AnalysisCompletedEvent

    broker = RedisStreamBroker("redis://localhost:6379/3")
    await broker.connect()
    await EventPublisher(broker).publish(AnalysisCompletedEvent(
        content_hash="...", redundancy_score=0.5, analysis_result={...}))
    await broker.disconnect()

Broker classes load their client library only when used; importing this package pulls in
no Redis, AMQP or Kafka code. Finished Celery jobs publish through the outbox
(``redundancy.events.emitter``), never straight to a broker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from redundancy.events.errors import (
    BrokerUnavailableError,
    InvalidEventError,
    MissingClientLibraryError,
    MissingSigningKeyError,
    PublishRejectedError,
)
from redundancy.events.models import (
    EVENT_TYPES,
    AnalysisCompletedEvent,
    BatchProcessingCompletedEvent,
    DomainEvent,
    JobFailedEvent,
    SimilarityCompletedEvent,
    WebhookDeliveredEvent,
    event_id_for,
    parse_event,
)
from redundancy.events.publisher import EventPublisher
from redundancy.events.wire import WireMessage, sign, signature_valid

if TYPE_CHECKING:
    from redundancy.events.brokers import EventBroker, create_broker
    from redundancy.events.brokers.kafka import KafkaBroker
    from redundancy.events.brokers.memory import InMemoryBroker
    from redundancy.events.brokers.rabbitmq import RabbitMQBroker
    from redundancy.events.brokers.redis_streams import RedisStreamBroker

_LAZY = {
    "EventBroker": "redundancy.events.brokers.base",
    "create_broker": "redundancy.events.brokers",
    "broker_from_settings": "redundancy.events.brokers",
    "InMemoryBroker": "redundancy.events.brokers.memory",
    "RedisStreamBroker": "redundancy.events.brokers.redis_streams",
    "RabbitMQBroker": "redundancy.events.brokers.rabbitmq",
    "KafkaBroker": "redundancy.events.brokers.kafka",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'redundancy.events' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "EVENT_TYPES",
    "AnalysisCompletedEvent",
    "BatchProcessingCompletedEvent",
    "BrokerUnavailableError",
    "DomainEvent",
    "EventBroker",
    "EventPublisher",
    "InMemoryBroker",
    "InvalidEventError",
    "JobFailedEvent",
    "KafkaBroker",
    "MissingClientLibraryError",
    "MissingSigningKeyError",
    "PublishRejectedError",
    "RabbitMQBroker",
    "RedisStreamBroker",
    "SimilarityCompletedEvent",
    "WebhookDeliveredEvent",
    "WireMessage",
    "broker_from_settings",
    "create_broker",
    "event_id_for",
    "parse_event",
    "sign",
    "signature_valid",
]
