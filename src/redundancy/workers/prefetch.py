"""How many messages a worker keeps in hand, chosen from the queues it consumes.

Celery reads ``worker_prefetch_multiplier`` before it knows a worker's ``-Q``; this
worker bootstep runs after the queues are selected and before the consumer is built
(every step's ``__init__`` precedes every ``create``), for ``crd worker`` and ``celery -A
redundancy worker`` alike: ``celeryconfig.prefetch_multiplier`` of those queues.
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps

from redundancy.workers.celeryconfig import prefetch_multiplier


class PrefetchForQueues(bootsteps.Step):  # type: ignore[misc]
    """Sets the worker's prefetch multiplier from its queues, unless ``--prefetch-multiplier``
    gave another value than the settings' (WORKER_PREFETCH_MULTIPLIER and the ops module
    are applied by ``prefetch_multiplier`` and ``create_app``)."""

    name = "redundancy.prefetch"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        conf = worker.app.conf
        if worker.prefetch_multiplier != conf.worker_prefetch_multiplier:
            return  # the command line's own choice
        queues = list(worker.app.amqp.queues.consume_from)
        chosen = prefetch_multiplier(queues)
        worker.prefetch_multiplier = conf.worker_prefetch_multiplier = chosen
