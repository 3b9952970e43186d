"""EventPublisher: serialise, sign (when a key is configured) and publish domain events."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redundancy.events.brokers.base import EventBroker
from redundancy.events.models import DomainEvent
from redundancy.events.wire import WireMessage


def configured_signing_key() -> bytes | None:
    """EVENTS_SIGNING_KEY as bytes, or None."""
    from redundancy.config import get_settings

    key = get_settings().events_signing_key
    return key.get_secret_value().encode() if key else None


class EventPublisher:
    """Publishes straight to a broker (the original service's API).

        publisher = EventPublisher(broker)
        await publisher.publish(event)        # asyncio
        publisher.publish_sync(event)         # scripts, workers

    Straight publishing fails when the broker is down; finished Celery jobs never use it
    directly but go through the outbox (``redundancy.events.bridge``), which retries.
    """

    def __init__(self, broker: EventBroker, signing_key: bytes | None = None) -> None:
        self.broker = broker
        self.signing_key = signing_key if signing_key is not None else configured_signing_key()

    def message(self, event: DomainEvent) -> WireMessage:
        return WireMessage.of(event, self.signing_key)

    def publish_sync(self, event: DomainEvent) -> None:
        self.broker.send_sync([self.message(event)])

    def publish_many_sync(self, events: Sequence[DomainEvent]) -> None:
        self.broker.send_sync([self.message(e) for e in events])

    async def publish(self, event: DomainEvent) -> None:
        await asyncio.to_thread(self.publish_sync, event)

    async def publish_many(self, events: Sequence[DomainEvent]) -> None:
        await asyncio.to_thread(self.publish_many_sync, list(events))
