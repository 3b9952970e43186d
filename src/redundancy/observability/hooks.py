"""Celery signal handlers for metrics, tracing, logs and the correlation id.

Importing this module connects nothing; ``register()`` does, called by ``create_app``
(``HOOK_MODULES`` in ``redundancy.workers.factory``) in producers and workers alike.
Where each signal fires decides where it is counted:

=====================================  ==============  ====================================
signal                                 process         does
=====================================  ==============  ====================================
before_task_publish                    producer        correlation id + sent time headers
after_task_publish                     producer        ``celery_task_sent_total``
celeryd_init / worker_init             worker main     no tracing here; /metrics endpoint
worker_ready / worker_shutdown         worker main     background monitor; ``worker_up``
task_received, task_revoked,           worker main     received / revoked / rejected
task_rejected, task_unknown
worker_process_init / _shutdown        pool process    tracing set up / flushed
task_prerun / task_postrun             pool process    started, wait time, runtime,
                                                       correlation id bound for the run
task_success / task_failure /          pool process    succeeded / failed / retried and
task_retry                                             our ``redundancy_*`` metrics
after_setup_logger (+ task logger)     worker main     JSON formatter when LOG_FORMAT=json
=====================================  ==============  ====================================

Every handler is guarded: an error is logged and counted in
``redundancy_hook_errors_total{hook}``, never raised into the job.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from contextvars import Token
from datetime import datetime
from typing import Any, TypeVar

from celery import bootsteps, signals, states
from celery.utils.dispatch import Signal

from redundancy import names
from redundancy.config import get_settings
from redundancy.errors import InvalidInputError
from redundancy.observability import metrics as m
from redundancy.observability.context import (
    CORRELATION_HEADER,
    SENT_AT_HEADER,
    bind_correlation_id,
    current_correlation_id,
    new_correlation_id,
    unbind_correlation_id,
    usable_correlation_id,
)
from redundancy.observability.logs import use_json
from redundancy.observability.tracing import configure_tracing, shutdown_tracing

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def guarded(hook: str) -> Callable[[F], F]:
    """Log and count any error of the wrapped handler instead of raising it."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception:
                log.warning("observability hook %s failed", hook, exc_info=True)
                with contextlib.suppress(Exception):
                    m.HOOK_ERRORS.labels(hook).inc()
                return None

        return run  # type: ignore[return-value]

    return wrap


# Per-process state. Pool processes get fresh copies of the parent's (empty) values.
_state = m.WorkerState()
_server: m.MetricsServer | None = None
_monitor: Any = None
_hostname: str | None = None
# Keyed by task id, as stacks: an eager batch runs its merge, which has the batch's id,
# inside the batch task.
_started: dict[str, list[float]] = {}
_bindings: dict[str, list[Token[str | None]]] = {}
_seen: set[tuple[str, str, str]] = set()


def _host(request: Any = None) -> str:
    return getattr(request, "hostname", None) or _hostname or socket.gethostname()


def _queue(request: Any) -> str:
    info = getattr(request, "delivery_info", None) or {}
    return str(info.get("routing_key") or info.get("queue") or "")


def _labels(name: str, request: Any) -> tuple[str, str, str]:
    labels = (name, _host(request), _queue(request))
    if labels not in _seen:  # celery-exporter shows every state of a seen task, at 0
        _seen.add(labels)
        for counter in m.STATE_COUNTERS:
            counter.labels(*labels).inc(0)
    return labels


# --- producer side ---------------------------------------------------------------------


@guarded("publish_headers")
def _stamp_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    if not headers.get(CORRELATION_HEADER):
        headers[CORRELATION_HEADER] = current_correlation_id() or new_correlation_id()
    headers[SENT_AT_HEADER] = time.time()


# --- worker main process -----------------------------------------------------------------


@guarded("tracing")
def _no_tracing_in_worker_main(**_: Any) -> None:
    shutdown_tracing()  # the main process runs no task; pool processes trace


@guarded("logging")
def _json_from_the_first_line(**_: Any) -> None:
    """Until Celery sets up logging, JSON-format what comes before it (such as the
    warning about running as root), so every line of a JSON worker is JSON."""
    if get_settings().log_format != "json":
        return
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    use_json(root)


@guarded("metrics_endpoint")
def _start_endpoint(sender: Any = None, **_: Any) -> None:
    global _server, _hostname
    _hostname = _state.hostname = getattr(sender, "hostname", "") or socket.gethostname()
    _state.concurrency = int(getattr(sender, "concurrency", 0) or 0)
    settings = get_settings()
    if settings.worker_metrics_port is None or _server is not None:
        return
    registry = m.worker_registry(_state)
    _server = m.serve(registry, settings.worker_metrics_port, settings.metrics_bind_address)
    log.info(
        "metrics at http://%s:%s/metrics",
        settings.metrics_bind_address,
        settings.worker_metrics_port,
    )


@guarded("metrics_monitor")
def _worker_ready(sender: Any = None, **_: Any) -> None:
    global _monitor
    from redundancy.observability.queues import WorkerMonitor, reporter_lease

    consumer = getattr(sender, "task_consumer", None)
    _state.queues = sorted(q.name for q in getattr(consumer, "queues", []) or [])
    _state.ready = True
    settings = get_settings()
    if settings.log_format == "json":
        _quiet_shutdown_notices(getattr(sender, "controller", None))
    if settings.worker_metrics_port is None or _monitor is not None:
        return
    app = sender.app
    lease = None
    if settings.job_store_url:
        owner = f"{_state.hostname}:{os.getpid()}"
        lease = reporter_lease(settings.job_store_url, owner, settings.metrics_interval)
    queues = sorted(set(names.QUEUES) | set(_state.queues))
    _monitor = WorkerMonitor(app, _state, queues, settings.metrics_interval, lease)
    _monitor.start()


def _quiet_shutdown_notices(worker: Any) -> None:
    """Celery prints "worker: Warm shutdown" as plain text on stdout from its SIGTERM and
    SIGQUIT handlers; reinstall them without it (same handlers, ``verbose=False``) so a
    JSON worker writes only JSON. ``worker_shutdown`` logs the shutdown instead."""
    from celery.apps import worker as celery_worker

    if worker is not None:
        celery_worker.install_worker_term_handler(worker, verbose=False)
        celery_worker.install_worker_term_hard_handler(worker, verbose=False)


@guarded("metrics_endpoint")
def _worker_shutdown(sender: Any = None, **_: Any) -> None:
    global _server, _monitor
    log.info("%s shutting down", getattr(sender, "hostname", "worker"))
    _state.ready = False
    if _monitor is not None:
        _monitor.stop()
        _monitor = None
    if _server is not None:
        _server.stop()
        _server = None


@guarded("metrics")
def _received(request: Any = None, **_: Any) -> None:
    m.TASK_RECEIVED.labels(*_labels(request.name, request)).inc()


@guarded("metrics")
def _revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    name = getattr(sender, "name", None) or getattr(request, "task", None) or "unknown"
    m.TASK_REVOKED.labels(*_labels(name, request)).inc()


@guarded("metrics")
def _rejected(message: Any = None, name: str | None = None, **_: Any) -> None:
    headers = getattr(message, "headers", None) or {}
    task = name or headers.get("task") or "unknown"
    m.TASK_REJECTED.labels(*_labels(task, message)).inc()


# --- pool processes ----------------------------------------------------------------------


@guarded("tracing")
def _child_started(sender: Any = None, **_: Any) -> None:
    global _hostname
    _hostname = str(sender) if sender else _hostname
    _started.clear()
    _bindings.clear()
    settings = get_settings()
    configure_tracing(settings.service_name, settings.otel_exporter_otlp_endpoint)


@guarded("tracing")
def _child_exiting(**_: Any) -> None:
    shutdown_tracing()


@guarded("task_prerun")
def _prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is None or task_id is None:
        return
    request = task.request
    given = getattr(request, CORRELATION_HEADER, None)
    correlation_id = usable_correlation_id(given)
    if not correlation_id and request.is_eager:
        correlation_id = current_correlation_id()  # eager: the caller's scope
    correlation_id = correlation_id or request.root_id or task_id or new_correlation_id()
    _bindings.setdefault(task_id, []).append(bind_correlation_id(correlation_id))
    if given and given != correlation_id:
        log.warning(
            "task %s: correlation id header %.80r is not a correlation id (README: Logs and "
            "the correlation id); the job's root id is used instead",
            task_id,
            given,
        )
    if request.is_eager:
        return
    labels = _labels(task.name, request)
    m.TASK_STARTED.labels(*labels).inc()
    _started.setdefault(task_id, []).append(time.perf_counter())
    waited = _queue_wait(request)
    if waited is not None:
        m.TASK_QUEUE_WAIT.labels(*labels).observe(waited)


def _queue_wait(request: Any) -> float | None:
    """Seconds since the message was published (or since its ETA, if later)."""
    sent_at = getattr(request, SENT_AT_HEADER, None)
    if sent_at is None:
        return None
    due = float(sent_at)
    eta = getattr(request, "eta", None)
    if eta:
        with contextlib.suppress(ValueError):
            due = max(due, datetime.fromisoformat(str(eta)).timestamp())
    return max(0.0, time.time() - due)


@guarded("task_postrun")
def _postrun(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    if task_id is None:
        return
    started = _pop(_started, task_id)
    try:
        if task is not None and not task.request.is_eager:
            labels = _labels(task.name, task.request)
            if started is not None:
                m.TASK_RUNTIME.labels(*labels).observe(time.perf_counter() - started)
            if state == states.REJECTED:
                m.TASK_REJECTED.labels(*labels).inc()
    finally:
        token = _pop(_bindings, task_id)
        if token is not None:
            unbind_correlation_id(token)


def _pop(stacks: dict[str, list[Any]], key: str) -> Any:
    stack = stacks.get(key)
    if not stack:
        return None
    value = stack.pop()
    if not stack:
        del stacks[key]
    return value


@guarded("task_success")
def _succeeded(sender: Any = None, result: Any = None, **_: Any) -> None:
    if sender is None:
        return
    if not sender.request.is_eager:
        m.TASK_SUCCEEDED.labels(*_labels(sender.name, sender.request)).inc()
    if isinstance(result, dict):
        _domain_metrics(sender.name, result)


def _observe_analysis(analysis: dict[str, Any]) -> None:
    m.DOCUMENTS_ANALYSED.inc()
    m.REDUNDANCY_SCORE.observe(float(analysis["redundancy_score"]))
    pairs = int(analysis.get("near_duplicate_pair_count") or 0)
    if pairs:
        m.NEAR_DUPLICATE_PAIRS.labels("sentence").inc(pairs)


def _domain_metrics(name: str, result: dict[str, Any]) -> None:
    if name == names.ANALYZE_CONTENT:
        _observe_analysis(result)
    elif name == names.COMPARE_TEXTS:
        similar = "true" if result.get("is_similar") else "false"
        m.COMPARISONS.labels(str(result.get("algorithm")), similar).inc()
    elif name == names.BATCH_ANALYZE_CHUNK:
        for item in result.get("items", []):
            if item.get("analysis"):
                _observe_analysis(item["analysis"])
            else:
                m.DOCUMENTS_FAILED.inc()
    elif name in names.PAIR_TASKS:  # pair shards (exact, all-pairs) and LSH verification
        pairs = len(result.get("pairs", []))
        if pairs:
            m.NEAR_DUPLICATE_PAIRS.labels("document").inc(pairs)
    elif name == names.BATCH_MERGE:
        m.BATCHES_COMPLETED.inc()


@guarded("task_failure")
def _failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    if sender is None:
        return
    request = sender.request
    if not request.is_eager:
        name, host, queue = _labels(sender.name, request)
        m.TASK_FAILED.labels(name, host, type(exception).__name__, queue).inc()
    if sender.name == names.ANALYZE_CONTENT and isinstance(exception, InvalidInputError):
        m.DOCUMENTS_FAILED.inc()


@guarded("task_retry")
def _retried(sender: Any = None, request: Any = None, **_: Any) -> None:
    if sender is None or getattr(request, "is_eager", False):
        return
    m.TASK_RETRIED.labels(*_labels(sender.name, request)).inc()


# --- logs --------------------------------------------------------------------------------


@guarded("logging")
def _json_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None and get_settings().log_format == "json":
        use_json(logger)


# --- producers: tracing from the start (a worker's main process undoes it in celeryd_init)


@guarded("tracing")
def _trace_producer() -> None:
    settings = get_settings()
    configure_tracing(settings.service_name, settings.otel_exporter_otlp_endpoint)


# --- the consumer's broker connection -----------------------------------------------------


class BrokerConnection(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery is untyped
    """A consumer bootstep after Celery's ``Connection`` step: started each time the
    consumer has (re)connected to the broker, stopped when it loses the connection (the
    consumer restarts its steps and reconnects), so ``celery_worker_up`` is 0 while a
    worker cannot consume -- the celery-mixin's ``CeleryWorkerDown`` then fires."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, parent: Any) -> None:
        _state.connected = True

    def stop(self, parent: Any) -> None:
        _state.connected = False

    def shutdown(self, parent: Any) -> None:
        _state.connected = False


CONSUMER_STEPS: tuple[type[bootsteps.StartStopStep], ...] = (BrokerConnection,)
"""Consumer bootsteps ``create_app`` adds to the app (``app.steps["consumer"]``)."""


# --- registration ------------------------------------------------------------------------

HANDLERS: tuple[tuple[Signal, Callable[..., Any]], ...] = (
    (signals.before_task_publish, _stamp_headers),
    (signals.celeryd_init, _no_tracing_in_worker_main),
    (signals.celeryd_init, _json_from_the_first_line),
    (signals.worker_init, _start_endpoint),
    (signals.worker_ready, _worker_ready),
    (signals.worker_shutdown, _worker_shutdown),
    (signals.task_received, _received),
    (signals.task_revoked, _revoked),
    (signals.task_rejected, _rejected),
    (signals.task_unknown, _rejected),
    (signals.worker_process_init, _child_started),
    (signals.worker_process_shutdown, _child_exiting),
    (signals.task_prerun, _prerun),
    (signals.task_postrun, _postrun),
    (signals.task_success, _succeeded),
    (signals.task_failure, _failed),
    (signals.task_retry, _retried),
    (signals.after_setup_logger, _json_logs),
    (signals.after_setup_task_logger, _json_logs),
)
"""Every signal handler of this module, in the order each signal calls them."""


def register() -> None:
    """Connect every handler and start the producer's tracing. Idempotent: Celery keeps
    one connection per receiver, and tracing is configured once per process."""
    for signal, handler in HANDLERS:
        signal.connect(handler, weak=False)
    _trace_producer()
