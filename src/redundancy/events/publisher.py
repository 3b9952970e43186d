"""EventPublisher: serialise, sign (when a key is configured) and publish domain events.

The one publish path: ``EventBroker.publish`` / ``publish_sync`` go through it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from redundancy.events.models import DomainEvent
from redundancy.events.wire import CONFIGURED, SigningKeys, WireMessage, resolve_signing_keys

if TYPE_CHECKING:
    from redundancy.events.brokers.base import EventBroker


class EventPublisher:
    """Publishes straight to a broker (the original service's API).

        publisher = EventPublisher(broker)
        await publisher.publish(event)        # asyncio
        publisher.publish_sync(event)         # scripts, workers

    ``signing_key``: by default the configured keys (EVENTS_SIGNING_KEY, and during a
    rotation EVENTS_SIGNING_KEYS_PREVIOUS; unsigned when none is configured); ``None``
    publishes unsigned. Straight publishing fails when the broker is down;
    finished Celery jobs never use it but go through the outbox
    (``redundancy.events.emitter``), which retries.
    """

    def __init__(self, broker: EventBroker, signing_key: SigningKeys = CONFIGURED) -> None:
        self.broker = broker
        self.signing_keys = resolve_signing_keys(signing_key)

    def publish_many_sync(self, events: Sequence[DomainEvent]) -> None:
        """Publish in order; returns once the broker confirmed every event."""
        self.broker.send_sync([WireMessage.of(e, self.signing_keys) for e in events])

    def publish_sync(self, event: DomainEvent) -> None:
        self.publish_many_sync([event])

    async def publish(self, event: DomainEvent) -> None:
        await asyncio.to_thread(self.publish_sync, event)
