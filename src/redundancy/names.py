"""Task and queue names: what each task is called and where it runs.

The names are public and stable (producers may ``send_task`` by name). This module
imports nothing of ours and nothing from Celery or kombu, so any layer (tasks, events,
observability, the CLI, tests) can use the names without building the Celery app;
``redundancy.workers.routing`` re-exports them beside the kombu queues built from them.
"""

from __future__ import annotations

from typing import Final

ANALYZE_CONTENT: Final = "redundancy.analyze_content"
COMPARE_TEXTS: Final = "redundancy.compare_texts"
PROCESS_BATCH: Final = "redundancy.process_batch"
BATCH_ANALYZE_CHUNK: Final = "redundancy.batch.analyze_chunk"
BATCH_PAIR_SHARD: Final = "redundancy.batch.pair_shard"
BATCH_LSH_SIGN: Final = "redundancy.batch.lsh_sign"
BATCH_LSH_BUCKET: Final = "redundancy.batch.lsh_bucket"
BATCH_LSH_VERIFY: Final = "redundancy.batch.lsh_verify"
BATCH_MERGE: Final = "redundancy.batch.merge"
BATCH_CORPUS_MATCH: Final = "redundancy.batch.corpus_match"
BATCH_SAGA_STEP: Final = "redundancy.batch.saga_step"
BATCH_SAGA_FINISH: Final = "redundancy.batch.saga_finish"
BATCH_SAGA_COMPENSATE: Final = "redundancy.batch.saga_compensate"
WEBHOOK_DELIVER: Final = "redundancy.webhooks.deliver"
CORPUS_INDEX: Final = "redundancy.corpus.index_documents"
CORPUS_REMOVE: Final = "redundancy.corpus.remove_documents"
CORPUS_FIND_SIMILAR: Final = "redundancy.corpus.find_similar"
CORPUS_CHECK_AND_INDEX: Final = "redundancy.corpus.check_and_index"
CORPUS_TASK_PREFIX: Final = "redundancy.corpus."
TASK_PREFIX: Final = "redundancy."
"""Every task of ours is named under this prefix (hooks ignore the rest)."""
BATCH_SUBTASK_PREFIX: Final = "redundancy.batch."
PAIR_TASKS: Final = (BATCH_PAIR_SHARD, BATCH_LSH_VERIFY)
"""Batch sub-tasks whose results are near-duplicate pairs (``{"kind": "pairs"}``)."""
BATCH_HEADER_TASKS: Final = (
    BATCH_ANALYZE_CHUNK, BATCH_PAIR_SHARD, BATCH_LSH_SIGN, BATCH_LSH_BUCKET, BATCH_LSH_VERIFY,
    BATCH_CORPUS_MATCH,
)  # fmt: skip
"""Every batch sub-task before the merge (the progress bar counts these)."""

ANALYSIS_QUEUE: Final = "analysis"
SIMILARITY_QUEUE: Final = "similarity"
BATCH_QUEUE: Final = "batch"
CORPUS_QUEUE: Final = "corpus"
"""Corpus commands (index, remove, query): a worker pool can be sized for them alone."""
CELERY_QUEUE: Final = "celery"
"""Celery's own default queue: a producer with an app of its own sends
``send_task("redundancy.analyze_content", ...)`` without a queue here, so every standard
worker listens on it too (our producers route each task to its queue)."""
QUEUES: Final = (ANALYSIS_QUEUE, SIMILARITY_QUEUE, BATCH_QUEUE, CORPUS_QUEUE, CELERY_QUEUE)
SHORT_JOB_QUEUES: Final = frozenset({ANALYSIS_QUEUE, SIMILARITY_QUEUE})
"""Queues of one- and two-text jobs (bounded by MAX_TEXT_CHARS, milliseconds each): a
worker consuming only these keeps a few messages in hand (``SHORT_JOB_PREFETCH``)."""
DEFAULT_QUEUE: Final = ANALYSIS_QUEUE
"""Anything unrouted (e.g. Celery's own helpers) lands where every standard worker listens."""
DEAD_LETTER_EXCHANGE: Final = "redundancy.dead-letter"
"""RabbitMQ: where the task queues dead-letter a rejected message (fanout)."""
DEAD_LETTER_QUEUE: Final = "redundancy.dead-letter"
"""RabbitMQ: the queue that keeps them, for inspection; no worker consumes it."""

TASK_ROUTES: Final = {
    ANALYZE_CONTENT: {"queue": ANALYSIS_QUEUE},
    COMPARE_TEXTS: {"queue": SIMILARITY_QUEUE},
    PROCESS_BATCH: {"queue": BATCH_QUEUE},
    f"{BATCH_SUBTASK_PREFIX}*": {"queue": BATCH_QUEUE},
    "redundancy.webhooks.*": {"queue": BATCH_QUEUE},  # deliveries wait on partners, not analyses
    f"{CORPUS_TASK_PREFIX}*": {"queue": CORPUS_QUEUE},
}
