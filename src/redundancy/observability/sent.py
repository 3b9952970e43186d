"""``celery_task_sent_total`` of the whole cluster, counted from Celery's task-sent events.

Every process that publishes a task message -- a producer's ``.delay()``, ``crd batch``,
a worker sending sub-tasks or a retry, a code base with an app of its own -- also
publishes a ``task-sent`` event (``task_send_sent_event``, on in our settings). A
producer has no metrics endpoint, so, as celery-exporter does, the worker that holds the
queue-reporter lease (see ``queues``) consumes those events on a connection of its own,
off the task path, and its endpoint exports the counts with celery-exporter's labels
(``name``, the sender's host as ``hostname``, ``queue_name``). ``sum by (name)`` over workers
is the cluster's total; a new lease holder starts from zero (a counter reset).

A producer pays only the event it already publishes (see the README's benchmark).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redundancy.observability.metrics import THREAD_ERRORS, WorkerState
from redundancy.observability.queues import PROBE_TIMEOUT, probe_connection

log = logging.getLogger(__name__)

SENT_ROUTING_KEY = "task.sent"
"""Routing key of task-sent events on Celery's event exchange (only these are received)."""
RETRY_SECONDS = 5.0


def count_sent(state: WorkerState, event: dict[str, Any]) -> None:
    """Count one task-sent event under celery-exporter's labels; ``hostname`` is the
    sender's host, without Celery's per-process ``gen<pid>@`` (as celery-exporter does: a
    label per producer process would grow without bound)."""
    labels = (
        str(event.get("name") or "unknown"),
        str(event.get("hostname") or "").rpartition("@")[2],
        str(event.get("queue") or ""),
    )
    with state.sent_lock:
        state.sent[labels] = state.sent.get(labels, 0) + 1


class SentEventCounter(threading.Thread):
    """Consumes task-sent events into ``state.sent`` until stopped (reconnecting after
    a broker outage); started and stopped by the worker monitor with the lease."""

    def __init__(self, app: Any, state: WorkerState) -> None:
        super().__init__(name="redundancy-sent-events", daemon=True)
        self.app, self.state = app, state
        self.stopping = threading.Event()
        self._receiver: Any = None

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._consume()
            except Exception as exc:
                if self.stopping.is_set():
                    break
                log.warning("task-sent event consumer failed: %s: %s", type(exc).__name__, exc)
                THREAD_ERRORS.count("sent_events")
                self.stopping.wait(RETRY_SECONDS)

    def _consume(self) -> None:
        with probe_connection(self.app) as connection:
            self._receiver = self.app.events.Receiver(
                connection,
                handlers={"task-sent": lambda event: count_sent(self.state, event)},
                routing_key=SENT_ROUTING_KEY,
            )
            if self.stopping.is_set():
                return
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def stop(self, timeout: float = 2 * PROBE_TIMEOUT) -> None:
        self.stopping.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        self.join(timeout)


__all__ = ["SENT_ROUTING_KEY", "SentEventCounter", "count_sent"]
