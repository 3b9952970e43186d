"""Waiting after an infrastructure failure: one back-off formula and the named policies.

Every wait of ours grows exponentially from a first delay, is capped, and is jittered so
that workers which failed together do not retry together. The policies, in one table:

======================  =====================================  ===========  ================
policy                  what is retried                        first delay  cap / attempts
======================  =====================================  ===========  ================
``relay_retry(s)``      the relay while the event broker is    0.5 s        EVENTS_RELAY_
                        down (it never gives up)                            RETRY_MAX
``webhook_retry(s)``    a webhook POST (5xx, timeout); the     WEBHOOK_     RETRY_BACKOFF_MAX,
                        wait is the retried task's countdown   BACKOFF      WEBHOOK_MAX_ATTEMPTS
``TASK_RETRY``          a task's infrastructure error          1 s          RETRY_BACKOFF_MAX,
                        (Celery's autoretry, its own formula                TASK_MAX_RETRIES
                        with full jitter; ``RedundancyTask``)
``PUBLISH_RETRY``       a producer sending a task message      0.2 s        3 s, 5 attempts
                        (kombu's linear retry_policy)
``OUTBOX_WRITE_RETRY``  a finished job's event into the        0.2 s        0.4 s, 3 attempts
                        outbox (the job's hook waits: brief)
``handler_retry(n)``    an event handler that raised (``crd    0.5 s        30 s, the
                        events handle``); then dead letters                 handler's tries
======================  =====================================  ===========  ================

No wait exceeds ``RETRY_BACKOFF_MAX``: the Redis visibility timeout is derived from it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from redundancy.config import RETRY_BACKOFF_MAX

if TYPE_CHECKING:
    from redundancy.config import Settings

FIRST_DELAY: Final = 0.5
"""First wait of a policy that names none (the relay's)."""


def backoff(failures: int, base: float = FIRST_DELAY, cap: float = RETRY_BACKOFF_MAX) -> float:
    """Wait after ``failures`` consecutive failures: base * 2^(failures-1), capped at
    ``cap``, jittered to [d/2, d] (half the spread of full jitter, never a zero wait)."""
    delay = min(cap, base * 2 ** max(0, failures - 1))
    return random.uniform(delay / 2, delay)


@dataclass(frozen=True)
class RetryPolicy:
    """``backoff`` with fixed parameters, and how many attempts are allowed (None: no limit)."""

    first: float = FIRST_DELAY
    cap: float = RETRY_BACKOFF_MAX
    attempts: int | None = None

    def delay(self, failures: int) -> float:
        return backoff(failures, self.first, self.cap)

    def retries_after(self, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (1-based) may be followed by another."""
        return self.attempts is None or attempt < self.attempts


def relay_retry(settings: Settings) -> RetryPolicy:
    return RetryPolicy(cap=settings.events_relay_retry_max)


def webhook_retry(settings: Settings) -> RetryPolicy:
    return RetryPolicy(first=settings.webhook_backoff, attempts=settings.webhook_max_attempts)


HANDLER_BACKOFF_MAX: Final = 30.0
"""Longest wait between two tries of an event handler: its event holds up the ones
behind it in the handler's consumer group meanwhile."""


def handler_retry(tries: int) -> RetryPolicy:
    """An event handler's policy: ``tries`` tries in all, then its event is dead-lettered."""
    return RetryPolicy(first=FIRST_DELAY, cap=HANDLER_BACKOFF_MAX, attempts=tries)


TASK_RETRY: Final = RetryPolicy(first=1.0)
"""Celery's ``retry_backoff=True`` starts at 1 s; attempts come from TASK_MAX_RETRIES."""

OUTBOX_WRITE_RETRY: Final = RetryPolicy(first=0.2, cap=0.4, attempts=3)
"""At most 0.6 s in all: a Redis blip is outlived; a Redis down fails the write fast
(the hook logs and counts it, and the job's result still stands)."""

PUBLISH_RETRY: Final = {
    "max_retries": 5,
    "interval_start": 0.2,
    "interval_step": 0.5,
    "interval_max": 3.0,
}
"""kombu's ``retry_policy`` for sending a task message (Celery's task_publish_retry_policy)."""

__all__ = [
    "FIRST_DELAY",
    "HANDLER_BACKOFF_MAX",
    "OUTBOX_WRITE_RETRY",
    "PUBLISH_RETRY",
    "RETRY_BACKOFF_MAX",
    "TASK_RETRY",
    "RetryPolicy",
    "backoff",
    "handler_retry",
    "relay_retry",
    "webhook_retry",
]
