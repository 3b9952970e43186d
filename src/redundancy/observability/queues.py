"""Queue lengths, measured off the hot path by the worker main process.

A daemon thread (``WorkerMonitor``) wakes every ``METRICS_INTERVAL`` seconds, compacts
the metric files of exited pool processes and -- if this worker holds the
queue-reporter lease -- measures our queues on its own broker connection (with
timeouts), never the consumer's, and keeps the task-sent event counter running
(``sent``): a slow or unreachable broker delays a gauge, never a task. Only one worker
at a time reports queue lengths and counts sends (a lease in the result backend's
Redis), so ``sum(celery_queue_length) by (queue_name)`` -- celery-mixin's alert -- counts
each message once however many workers run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from typing import Any

from redundancy import keys, resources
from redundancy.kv.lease import Lease, RedisLease
from redundancy.observability.metrics import THREAD_ERRORS, WorkerState, compact_safely
from redundancy.observability.multiproc import multiprocess_folder

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0


def measure_queues(connection: Any, queues: Iterable[str]) -> dict[str, tuple[int, int | None]]:
    """``{queue: (messages ready, consumers)}`` by passive declare on a kombu connection.

    Redis has no consumers to count (None); a queue the broker does not know (Redis
    deletes empty lists) has 0 messages.
    """
    is_amqp = connection.transport.driver_type == "amqp"
    out: dict[str, tuple[int, int | None]] = {}
    for queue in queues:
        channel = connection.channel()
        try:
            ok = channel.queue_declare(queue=queue, passive=True)
            out[queue] = (int(ok.message_count), int(ok.consumer_count) if is_amqp else None)
        except connection.channel_errors:
            out[queue] = (0, 0 if is_amqp else None)
        finally:
            with contextlib.suppress(Exception):  # already closed by the broker (404 on AMQP)
                channel.close()
    return out


def probe_connection(app: Any) -> Any:
    """A broker connection of the probe's own, with timeouts on connect, read and write."""
    conn = app.connection_for_read(connect_timeout=PROBE_TIMEOUT)
    if conn.transport.driver_type == "amqp":
        timeouts = {"read_timeout": PROBE_TIMEOUT, "write_timeout": PROBE_TIMEOUT}
    else:
        timeouts = {"socket_timeout": PROBE_TIMEOUT, "socket_connect_timeout": PROBE_TIMEOUT}
    conn.release()
    return app.connection_for_read(connect_timeout=PROBE_TIMEOUT, transport_options=timeouts)


def reporter_lease(url: str, owner: str, interval: float) -> RedisLease:
    """The lease of the one worker that reports queue lengths, renewed every ``interval``
    and lost after three missed renewals."""
    client = resources.redis_client(
        url, resources.Role.JOBS, timeout=PROBE_TIMEOUT, decode_responses=True
    )
    ttl = max(3, int(interval * 3))
    return RedisLease(client, keys.metrics_queue_reporter(), ttl, owner=owner)


class WorkerMonitor(threading.Thread):
    """The main process's background chores for metrics (see the module docstring)."""

    def __init__(
        self, app: Any, state: WorkerState, queues: list[str], interval: float, lease: Lease | None
    ) -> None:
        super().__init__(name="redundancy-metrics-monitor", daemon=True)
        self.app, self.state, self.queues = app, state, queues
        self.interval, self.lease = interval, lease
        self.stopping = threading.Event()
        self._connection: Any = None
        self._sent: Any = None

    def run(self) -> None:
        while True:
            self.tick()
            if self.stopping.wait(self.interval):
                break
        self._close()
        self._stop_sent_counter()
        if self.lease is not None:
            try:
                self.lease.release()
            except Exception:
                log.debug("could not release the queue-reporter lease", exc_info=True)

    def stop(self, timeout: float = 2 * PROBE_TIMEOUT) -> None:
        self.stopping.set()
        self.join(timeout)

    def tick(self) -> None:
        folder = multiprocess_folder()
        if folder is not None:
            compact_safely(folder)
        try:
            self.measure()
        except Exception as exc:
            # Stale numbers would mislead: report none until the probe works again.
            self.state.queue_lengths = self.state.consumer_counts = None
            self._close()
            log.warning("queue length probe failed: %s: %s", type(exc).__name__, exc)
            THREAD_ERRORS.count("queue_probe")

    def measure(self) -> None:
        if self.lease is not None and not self.lease.hold():
            self.state.queue_lengths = self.state.consumer_counts = None
            self._stop_sent_counter()
            return
        self._start_sent_counter()
        if self._connection is None:
            self._connection = probe_connection(self.app)
            self._connection.ensure_connection(
                max_retries=1, interval_start=0, timeout=PROBE_TIMEOUT
            )
        found = measure_queues(self._connection, self.queues)
        self.state.queue_lengths = {q: n for q, (n, _) in found.items()}
        consumers = {q: c for q, (_, c) in found.items() if c is not None}
        self.state.consumer_counts = consumers or None

    def _start_sent_counter(self) -> None:
        """The lease holder counts the cluster's task-sent events (``sent``)."""
        if self._sent is None or not self._sent.is_alive():
            from redundancy.observability.sent import SentEventCounter

            self._sent = SentEventCounter(self.app, self.state)
            self._sent.start()

    def _stop_sent_counter(self) -> None:
        if self._sent is not None:
            self._sent.stop()
            self._sent = None

    def _close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.release()
            self._connection = None
