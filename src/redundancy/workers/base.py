"""The base class of every task: retry policy, the poison-message guard and the message
guard (its strategy)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redundancy.cache import overlap
from redundancy.config import get_settings
from redundancy.errors import InfrastructureError, InvalidInputError, PoisonMessageError
from redundancy.retry import TASK_RETRY
from redundancy.workers.deliveries import DELIVERIES_COUNTED, get_delivery_counter

log = logging.getLogger(__name__)

RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    InfrastructureError,
    RedisConnectionError,
    RedisTimeoutError,
    OperationalError,
    ConnectionError,
    TimeoutError,
)
"""Only infrastructure errors are retried; invalid input fails at once."""

RESULT_REPR_CHARS = 360
"""Length of a result's text form in the "succeeded" log line and the task-succeeded event
(Flower's result column): an analysis's hash, counts and score, as JSON
(``redundancy.workers.resultrepr``). Celery builds it for every task, log level aside;
the full result is in the result backend."""


class RedundancyTask(Task):  # type: ignore[misc]
    """Retries infrastructure errors with exponential back-off and jitter (``TASK_RETRY``).

    ``throws`` marks invalid input as an expected failure (logged without a traceback).
    """

    resultrepr_maxsize = RESULT_REPR_CHARS

    autoretry_for = RETRYABLE_ERRORS
    retry_backoff = int(TASK_RETRY.first)  # Celery's factor: first wait in seconds
    retry_backoff_max = int(TASK_RETRY.cap)
    retry_jitter = True
    throws = (InvalidInputError,)
    typing = True
    Strategy = "redundancy.workers.guard:guarded_strategy"
    """The message guard in front of Celery's default strategy: a malformed message is
    rejected, recorded and dead-lettered instead of stopping the worker."""

    @property
    def max_retries(self) -> int:
        return get_settings().task_max_retries

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        """Finish the results cache's work the result backend did not take (a store to
        write, an early lock to release: ``redundancy.cache.overlap``)."""
        overlap.finish(self.request)

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Refuse a message that keeps coming back (it killed workers MAX_DELIVERIES times).

        With late acknowledgement a task that crashes its worker is redelivered forever;
        counting deliveries per attempt stops it. Usually the result backend counted this
        delivery already, with the STARTED state; else the counter does. A broken counter
        never blocks the task.
        """
        if self.request.is_eager:
            return
        limit = get_settings().max_deliveries
        count = getattr(self.request, DELIVERIES_COUNTED, None)
        try:
            if count is None:
                count = get_delivery_counter().count(task_id, self.request.retries or 0)
        except Exception:  # a hook never fails the job
            log.warning("delivery counter unavailable for %s", task_id, exc_info=True)
            return
        if count > limit:
            raise PoisonMessageError(
                f"task {self.name}[{task_id}] was delivered {count} times (MAX_DELIVERIES="
                f"{limit}); it probably crashes its worker, so it is failed instead of retried"
            )
