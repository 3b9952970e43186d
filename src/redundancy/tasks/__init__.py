"""Celery tasks (thin: validate -> core -> JSON dict), with the batch's re-exported.

from redundancy.tasks import analyze_content, compare_texts, process_batch
analyze_content.delay("Some text. Some text.").get()

The batch tasks live in ``redundancy.batch``; they are re-exported here so one import
registers every task (Celery's ``imports`` setting names this package).
"""

from __future__ import annotations

from redundancy.batch import (
    StagedBatch,
    analyze_chunk,
    deliver_webhook,
    lsh_bucket,
    lsh_sign,
    lsh_verify,
    merge_batch,
    pair_shard,
    process_batch,
    stage_batch,
)
from redundancy.tasks.analysis import analyze_content, compare_texts
from redundancy.tasks.corpus import (
    check_and_index,
    find_similar,
    index_documents,
    remove_documents,
)

__all__ = [
    "StagedBatch",
    "analyze_chunk",
    "analyze_content",
    "check_and_index",
    "compare_texts",
    "deliver_webhook",
    "find_similar",
    "index_documents",
    "lsh_bucket",
    "lsh_sign",
    "lsh_verify",
    "merge_batch",
    "pair_shard",
    "process_batch",
    "remove_documents",
    "stage_batch",
]
