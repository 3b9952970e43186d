"""A batch end to end: staging, the canvas, its tasks and the runner's client side.

    from redundancy.batch import stage_batch
    staged = stage_batch(items, 0.8)        # documents in the job store, canvas built
    result = staged.canvas.apply_async()    # the merge's result is the BatchResult

Modules in import order (each uses only modules listed before it; a test checks it):

    store     the job store: staged documents, progress, LSH tables (Redis or in memory)
    staging   writing and loading staged documents, progress of the sub-tasks
    webhooks  the webhook delivery task (the merge schedules it)
    search    the indexed mode's LSH tasks (table arithmetic: ``core.lsh_tables``)
    corpus    a batch against a corpus: matches per chunk, the saga that adds the batch
    tasks     analyze_chunk, pair_shard, merge_batch
    canvas    stage_batch, StagedBatch, process_batch: the chord that wires the tasks
    runner    a producer's side: stage, run in-process or on the cluster, follow progress
"""

from __future__ import annotations

from redundancy.batch.canvas import StagedBatch, process_batch, stage_batch
from redundancy.batch.search import lsh_bucket, lsh_sign, lsh_verify
from redundancy.batch.staging import StagedDocumentsMissingError
from redundancy.batch.tasks import analyze_chunk, merge_batch, pair_shard
from redundancy.batch.webhooks import deliver_webhook

__all__ = [
    "StagedBatch",
    "StagedDocumentsMissingError",
    "analyze_chunk",
    "deliver_webhook",
    "lsh_bucket",
    "lsh_sign",
    "lsh_verify",
    "merge_batch",
    "pair_shard",
    "process_batch",
    "stage_batch",
]
