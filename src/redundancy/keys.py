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


METRICS = area_prefix("metrics")


def metrics_queue_reporter() -> str:
    """Lease naming the one worker that reports cluster-wide queue lengths."""
    return f"{METRICS}queue-reporter"
