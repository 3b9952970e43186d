"""Every Redis key this project writes, in one place (arq's convention).

All keys live under ``redundancy:<area>:v1:``; bump the version of an area when its
stored format changes so old and new workers never read each other's data.
"""

from __future__ import annotations

ROOT = "redundancy"


def area_prefix(area: str, version: int = 1) -> str:
    """``redundancy:<area>:v<version>:`` -- the namespace of one area."""
    return f"{ROOT}:{area}:v{version}:"


BATCH = area_prefix("batch")
DELIVERIES = area_prefix("deliveries")


def batch_docs(batch_id: str) -> str:
    """Hash of position -> JSON ``{"id", "text"}`` staged for one batch."""
    return f"{BATCH}{batch_id}:docs"


def batch_meta(batch_id: str) -> str:
    """Hash of batch facts (count, created_at) next to the staged documents."""
    return f"{BATCH}{batch_id}:meta"


def delivery_counter(task_id: str, retries: int) -> str:
    """How many times one attempt of a task message has been delivered."""
    return f"{DELIVERIES}{task_id}:{retries}"


EVENTS = area_prefix("events")


def event_stream(topic: str) -> str:
    """The Redis Streams event broker's stream (``EVENTS_TOPIC``)."""
    return f"{EVENTS}stream:{topic}"


def outbox() -> str:
    """Stream of events written by finished tasks and not yet relayed to the event broker."""
    return f"{EVENTS}outbox"


def outbox_dead_letters() -> str:
    """Outbox entries the relay could never publish (unreadable, or refused by the broker)."""
    return f"{EVENTS}outbox:dead"


def relay_lease() -> str:
    """Lock held by the one relay that drains the outbox (order per aggregate needs one)."""
    return f"{EVENTS}outbox:lease"


def seen_event(group: str, event_id: str) -> str:
    """Marks an event a consumer group has handled (cross-process dedupe)."""
    return f"{EVENTS}seen:{group}:{event_id}"
