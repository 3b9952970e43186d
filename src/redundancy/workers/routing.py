"""Task names, queues and routes: one place that says what each task is called and
where it runs. The names live in ``redundancy.names`` (which imports nothing) and are
re-exported here beside the kombu queues built from them; kombu loads only when the
queues are built, so importing this module stays cheap and builds no app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redundancy.names import (
    ANALYSIS_QUEUE,
    ANALYZE_CONTENT,
    BATCH_ANALYZE_CHUNK,
    BATCH_HEADER_TASKS,
    BATCH_LSH_BUCKET,
    BATCH_LSH_SIGN,
    BATCH_LSH_VERIFY,
    BATCH_MERGE,
    BATCH_PAIR_SHARD,
    BATCH_QUEUE,
    BATCH_SUBTASK_PREFIX,
    CELERY_QUEUE,
    COMPARE_TEXTS,
    CORPUS_CHECK_AND_INDEX,
    CORPUS_FIND_SIMILAR,
    CORPUS_INDEX,
    CORPUS_QUEUE,
    CORPUS_REMOVE,
    CORPUS_TASK_PREFIX,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DEFAULT_QUEUE,
    PAIR_TASKS,
    PROCESS_BATCH,
    QUEUES,
    SIMILARITY_QUEUE,
    TASK_PREFIX,
    TASK_ROUTES,
    WEBHOOK_DELIVER,
)

if TYPE_CHECKING:
    from kombu.entity import Queue


def task_queues(dead_lettering: bool = True) -> tuple[Queue, ...]:
    """Durable direct queues, one exchange each (RabbitMQ and Redis alike).

    ``dead_lettering``: on RabbitMQ a rejected message goes to ``DEAD_LETTER_EXCHANGE``
    (the ``x-dead-letter-exchange`` queue argument; kombu's Redis transport ignores it).
    RabbitMQ refuses to redeclare a queue with other arguments, so queues declared
    before this argument existed need ``TASK_QUEUE_DEAD_LETTERING=false`` (and a policy)
    or to be recreated: README "Security".
    """
    from kombu.entity import Exchange, Queue

    arguments = {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE} if dead_lettering else None
    return tuple(
        Queue(
            name,
            Exchange(name, type="direct"),
            routing_key=name,
            # Celery's own default queue keeps Celery's declaration: a plain producer
            # (``send_task`` without a queue) declares it without arguments, and RabbitMQ
            # refuses a second declaration with other arguments.
            queue_arguments=None if name == CELERY_QUEUE else arguments,
        )
        for name in QUEUES
    )


__all__ = [
    "ANALYSIS_QUEUE",
    "ANALYZE_CONTENT",
    "BATCH_ANALYZE_CHUNK",
    "BATCH_HEADER_TASKS",
    "BATCH_LSH_BUCKET",
    "BATCH_LSH_SIGN",
    "BATCH_LSH_VERIFY",
    "BATCH_MERGE",
    "BATCH_PAIR_SHARD",
    "BATCH_QUEUE",
    "BATCH_SUBTASK_PREFIX",
    "CELERY_QUEUE",
    "COMPARE_TEXTS",
    "CORPUS_CHECK_AND_INDEX",
    "CORPUS_FIND_SIMILAR",
    "CORPUS_INDEX",
    "CORPUS_QUEUE",
    "CORPUS_REMOVE",
    "CORPUS_TASK_PREFIX",
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "DEFAULT_QUEUE",
    "PAIR_TASKS",
    "PROCESS_BATCH",
    "QUEUES",
    "SIMILARITY_QUEUE",
    "TASK_PREFIX",
    "TASK_ROUTES",
    "WEBHOOK_DELIVER",
    "task_queues",
]
