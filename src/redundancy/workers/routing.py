"""Queues and routes: one place that says which task runs on which queue."""

from __future__ import annotations

from typing import Final

from kombu import Exchange, Queue

ANALYSIS_QUEUE: Final = "analysis"
SIMILARITY_QUEUE: Final = "similarity"
BATCH_QUEUE: Final = "batch"
QUEUES: Final = (ANALYSIS_QUEUE, SIMILARITY_QUEUE, BATCH_QUEUE)
DEFAULT_QUEUE: Final = ANALYSIS_QUEUE
"""Anything unrouted (e.g. Celery's own helpers) lands where every standard worker listens."""

TASK_ROUTES: Final = {
    "redundancy.analyze_content": {"queue": ANALYSIS_QUEUE},
    "redundancy.compare_texts": {"queue": SIMILARITY_QUEUE},
    "redundancy.process_batch": {"queue": BATCH_QUEUE},
    "redundancy.batch.*": {"queue": BATCH_QUEUE},
    "redundancy.webhooks.*": {"queue": BATCH_QUEUE},  # deliveries wait on partners, not analyses
}


def task_queues() -> tuple[Queue, ...]:
    """Durable direct queues, one exchange each (RabbitMQ and Redis alike)."""
    return tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES)
