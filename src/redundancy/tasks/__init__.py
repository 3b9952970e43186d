"""Celery tasks (thin: validate -> core -> JSON dict) and batch submission helpers.

from redundancy.tasks import analyze_content, compare_texts, process_batch
analyze_content.delay("Some text. Some text.").get()
"""

from __future__ import annotations

from redundancy.batch.search import lsh_bucket, lsh_sign, lsh_verify
from redundancy.batch.tasks import (
    StagedBatch,
    analyze_chunk,
    merge_batch,
    pair_shard,
    process_batch,
    stage_batch,
)
from redundancy.batch.webhooks import deliver_webhook
from redundancy.tasks.analysis import analyze_content, compare_texts

__all__ = [
    "StagedBatch",
    "analyze_chunk",
    "analyze_content",
    "compare_texts",
    "deliver_webhook",
    "lsh_bucket",
    "lsh_sign",
    "lsh_verify",
    "merge_batch",
    "pair_shard",
    "process_batch",
    "stage_batch",
]
