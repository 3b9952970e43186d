"""Celery tasks (thin: validate -> core -> JSON dict) and batch submission helpers.

from redundancy.tasks import analyze_content, compare_texts, process_batch
analyze_content.delay("Some text. Some text.").get()
"""

from __future__ import annotations

from redundancy.tasks.analysis import analyze_content, compare_texts
from redundancy.tasks.batch import (
    StagedBatch,
    analyze_chunk,
    merge_batch,
    pair_shard,
    process_batch,
    stage_batch,
)
from redundancy.tasks.corpus import (  # corpora (issue 14)
    check_and_index,
    find_similar,
    index_documents,
    remove_documents,
)
from redundancy.tasks.search import lsh_bucket, lsh_sign, lsh_verify
from redundancy.tasks.webhooks import deliver_webhook

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
