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


def batch_pattern(batch_id: str) -> str:
    """SCAN pattern of every key of one batch (documents, progress, search tables)."""
    return f"{BATCH}{batch_id}:*"


def batch_progress(batch_id: str) -> str:
    """Counter of a batch's finished sub-tasks (the CLI's progress bar on a cluster)."""
    return f"{BATCH}{batch_id}:progress"


def batch_lsh_partition(batch_id: str, partition: int) -> str:
    """Hash of chunk -> LSH band records (key, position) whose key falls in a partition."""
    return f"{BATCH}{batch_id}:lsh:part:{partition}"


def batch_lsh_candidates(batch_id: str, chunk: int) -> str:
    """Hash of partition -> candidate pairs whose lower position is in one chunk."""
    return f"{BATCH}{batch_id}:lsh:cand:{chunk}"


def delivery_counter(task_id: str, retries: int) -> str:
    """How many times one attempt of a task message has been delivered."""
    return f"{DELIVERIES}{task_id}:{retries}"
