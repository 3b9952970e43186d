"""Prometheus metrics of the event layer (exposed by ``redundancy.observability``).

Counters count in every process; the backlog gauges are set by each relay from the
outbox itself, so every relay reports the same value (``livemax`` in multiprocess mode).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_PUBLISHED = Counter(
    "redundancy_events_published_total",
    "Events the event broker confirmed",
    ["broker"],
)
EVENTS_FAILED = Counter(
    "redundancy_events_failed_total",
    "Events whose publish (or outbox write, broker=outbox) failed; relayed events are retried",
    ["broker"],
)
EVENTS_DEAD_LETTERED = Counter(
    "redundancy_events_dead_lettered_total",
    "Outbox entries moved aside because no retry can publish them",
    ["reason"],
)
EVENTS_CONSUMED = Counter(
    "redundancy_events_consumed_total",
    "Events read by consumers, by outcome (handled, duplicate, rejected, skipped)",
    ["broker", "outcome"],
)
OUTBOX_WRITTEN = Counter(
    "redundancy_outbox_written_total", "Events written to the outbox by finished jobs"
)
OUTBOX_BACKLOG = Gauge(
    "redundancy_outbox_backlog",
    "Events in the outbox not yet confirmed by the event broker",
    multiprocess_mode="livemax",
)
OUTBOX_OLDEST_AGE = Gauge(
    "redundancy_outbox_oldest_age_seconds",
    "Age of the oldest event waiting in the outbox",
    multiprocess_mode="livemax",
)
WEBHOOK_DELIVERIES = Counter(
    "redundancy_webhook_deliveries_total",
    "Webhook deliveries by final status (delivered, failed, refused)",
    ["status"],
)
CORPUS_EVENTS_SKIPPED = Counter(
    "redundancy_corpus_events_skipped_total",
    "Corpus event-store entries the projector skipped instead of stopping on them: "
    "unreadable, or forged or unsigned while a signing key is set",
    ["corpus"],
)
HANDLER_OUTCOMES = Counter(
    "redundancy_event_handler_total",
    "Events by event handler and outcome (handled, retried, dead_lettered, duplicate)",
    ["handler", "outcome"],
)
