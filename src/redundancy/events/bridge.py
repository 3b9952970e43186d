"""The bridge: finished Celery jobs become domain events, at least once.

In a worker's pool process Celery fires ``task_success`` / ``task_failure`` after the
result is stored and before the parent acknowledges the task message (``task_acks_late``).
The handlers here write the event to the outbox then, so an event is durable before its
job's message is acked: a crash in between redelivers the job, which writes the event
again with the same deterministic ``event_id``. The event broker is never touched by the
job: a relay (``redundancy.events.relay``) moves the outbox to it, so a broken broker
delays events but never fails or slows a job.

Which jobs emit (batch sub-tasks emit nothing, or a batch would flood the bus):

    redundancy.analyze_content  -> analysis.completed     (aggregate: content hash)
    redundancy.compare_texts    -> similarity.completed   (aggregate: hash1:hash2)
    redundancy.batch.merge      -> batch.completed        (emitted by the merge itself,
                                                            so its webhook carries it)
    redundancy.webhooks.deliver -> webhook.delivered      (aggregate: the batch announced)
    any of those failing for good, or a batch's sub-task -> job.failed

The relay runs beside every worker, as a child process of its main process
(``EVENTS_RELAY_IN_WORKER``; one relay holds the lease), or as ``crd events relay``.
The embedded default relays inline.
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any

from celery.signals import task_failure, task_success, worker_ready, worker_shutdown

from redundancy.correlation import correlation_id_of
from redundancy.events import metrics
from redundancy.events.models import (
    ANALYSIS_COMPLETED,
    BATCH_COMPLETED,
    JOB_FAILED,
    SIMILARITY_COMPLETED,
    WEBHOOK_DELIVERED,
    AnalysisCompletedEvent,
    BatchProcessingCompletedEvent,
    DomainEvent,
    JobFailedEvent,
    SimilarityCompletedEvent,
    WebhookDeliveredEvent,
    event_id_for,
)
from redundancy.events.wire import WireMessage
from redundancy.observability.context import current_trace_id
from redundancy.workers import routing as names

log = logging.getLogger(__name__)

ANALYZE_TASK = names.ANALYZE_CONTENT
COMPARE_TASK = names.COMPARE_TEXTS
BATCH_TASK = names.PROCESS_BATCH
MERGE_TASK = names.BATCH_MERGE
WEBHOOK_TASK = names.WEBHOOK_DELIVER
BATCH_SUBTASK_PREFIX = names.BATCH_SUBTASK_PREFIX

MAX_EVENT_BYTES = 512 * 1024
"""Larger analysis events drop their sentence and phrase lists (Kafka's default limit is 1 MiB)."""
ERROR_MESSAGE_CHARS = 2_000


# --- events from results ----------------------------------------------------------------


def _envelope(request: Any, event_type: str, job_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id_for(event_type, job_id),
        "task_id": getattr(request, "id", None),
        "correlation_id": correlation_id_of(request),
        "trace_id": current_trace_id(),
    }


def analysis_event(request: Any, result: dict[str, Any]) -> AnalysisCompletedEvent:
    analysis = dict(result)
    event = AnalysisCompletedEvent(
        **_envelope(request, ANALYSIS_COMPLETED, request.id),
        content_hash=result["content_hash"],
        redundancy_score=result["redundancy_score"],
        analysis_result=analysis,
    )
    if len(event.to_json()) > MAX_EVENT_BYTES:
        analysis.update(near_duplicate_sentences=[], repeated_phrases=[], truncated=True)
        event = event.model_copy(
            update={"payload": event.payload.model_copy(update={"analysis_result": analysis})}
        )
    return event


def similarity_event(request: Any, result: dict[str, Any]) -> SimilarityCompletedEvent:
    return SimilarityCompletedEvent(
        **_envelope(request, SIMILARITY_COMPLETED, request.id),
        text1_hash=result["text1_hash"],
        text2_hash=result["text2_hash"],
        similarity_score=result["similarity_score"],
        is_similar=result["is_similar"],
        algorithm=result.get("algorithm"),
        threshold=result.get("threshold"),
    )


def batch_event(request: Any, result: dict[str, Any]) -> BatchProcessingCompletedEvent:
    """batch.completed from a BatchResult dict (one per batch: keyed on the batch id)."""
    batch_id = result["batch_id"]
    return BatchProcessingCompletedEvent(
        **_envelope(request, BATCH_COMPLETED, batch_id),
        batch_id=batch_id,
        total_jobs=result["document_count"],
        completed_jobs=result["succeeded"],
        failed_jobs=result["failed"],
        unique_count=result.get("unique_count"),
        pair_count=len(result.get("pairs", [])),
        cluster_count=len(result.get("clusters", [])),
        threshold=result.get("threshold"),
        algorithm=result.get("algorithm"),
    )


def webhook_event(request: Any, report: dict[str, Any]) -> WebhookDeliveredEvent:
    return WebhookDeliveredEvent(
        **_envelope(request, WEBHOOK_DELIVERED, report["delivery_id"]),
        aggregate_id=report.get("aggregate_id") or report["delivery_id"],
        **{k: v for k, v in report.items() if k != "aggregate_id"},
    )


def _batch_id(name: str, request: Any, args: Any, kwargs: Any) -> str:
    """The batch a failing batch task belongs to (sub-tasks carry it as an argument)."""
    kwargs = kwargs or {}
    if kwargs.get("batch_id"):
        return str(kwargs["batch_id"])
    args = list(args or [])
    if name == MERGE_TASK and len(args) > 1:
        return str(args[1])
    if name.startswith(BATCH_SUBTASK_PREFIX) and args:
        return str(args[0])
    return str(request.id)


def failure_event(
    name: str, request: Any, exc: BaseException, args: Any, kwargs: Any
) -> DomainEvent | None:
    message = f"{exc}"[:ERROR_MESSAGE_CHARS]
    if name == WEBHOOK_TASK:
        from redundancy.events.webhooks import endpoint_id

        kw, url = kwargs or {}, (list(args or []) or [""])[0]
        return webhook_event(
            request,
            {
                "delivery_id": kw.get("delivery_id") or request.id,
                "endpoint_id": endpoint_id(url),
                "status": "failed",
                "attempts": (request.retries or 0) + 1,
                "error": f"{type(exc).__name__}: {message}",
                "aggregate_id": kw.get("aggregate_id"),
            },
        )
    if name in (ANALYZE_TASK, COMPARE_TASK):
        job, aggregate = ("analysis" if name == ANALYZE_TASK else "similarity"), str(request.id)
    elif name == BATCH_TASK or name.startswith(BATCH_SUBTASK_PREFIX):
        job, aggregate = "batch", _batch_id(name, request, args, kwargs)
    else:
        return None
    return JobFailedEvent(
        **_envelope(request, JOB_FAILED, aggregate),
        aggregate_id=aggregate,
        job=job,
        task_name=name,
        error_type=type(exc).__name__,
        error_message=message,
        retries=request.retries or 0,
    )


SUCCESS_EVENTS = {
    ANALYZE_TASK: analysis_event,
    COMPARE_TASK: similarity_event,
    WEBHOOK_TASK: webhook_event,
}
"""Task name -> event builder for ``task_success`` (the merge emits its own)."""


# --- writing to the outbox ----------------------------------------------------------------


_relay: Any = None
_relay_pid: int | None = None


def _enabled() -> bool:
    from redundancy.config import get_settings

    return get_settings().events_enabled


def emit(event: DomainEvent) -> None:
    """Write ``event`` to the outbox (signed when EVENTS_SIGNING_KEY is set).

    Raises BrokerUnavailableError when the outbox cannot be written after brief retries.
    In the embedded default the event is then relayed at once, in this thread.
    """
    if not _enabled():
        return
    from redundancy.events.outbox import get_outbox
    from redundancy.events.publisher import configured_signing_key

    outbox = get_outbox()
    outbox.append(WireMessage.of(event, configured_signing_key()))
    if not outbox.durable:
        inline_relay().try_step()


def inline_relay() -> Any:
    """The embedded default's relay (this process's in-memory outbox to the broker)."""
    global _relay, _relay_pid
    if _relay is None or _relay_pid != os.getpid():
        from redundancy.events.brokers import broker_from_settings
        from redundancy.events.outbox import get_outbox
        from redundancy.events.relay import Relay

        _relay = Relay(get_outbox(), broker_from_settings())
        _relay_pid = os.getpid()
        atexit.register(_flush_at_exit)
    return _relay


def _flush_at_exit() -> None:
    if _relay is None or _relay_pid != os.getpid():
        return
    left = _relay.drain(timeout=_relay.broker.publish_timeout)
    if left:
        log.error(
            "%d events could not reach the event broker before exit and are lost "
            "(the embedded default keeps its outbox in memory)",
            left,
        )


def emit_safely(event: DomainEvent | None) -> None:
    """``emit`` for signal handlers: a hook never fails the job -- it logs and counts."""
    if event is None:
        return
    try:
        emit(event)
    except Exception:
        metrics.EVENTS_FAILED.labels("outbox").inc()
        log.exception(
            "event %s (%s) could not be written to the outbox and is lost",
            event.event_id,
            event.event_type,
        )


@task_success.connect(weak=False)
def _on_task_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    build = SUCCESS_EVENTS.get(getattr(sender, "name", ""))
    if build is None or not _enabled():
        return
    try:
        event = build(sender.request, result)
    except Exception:
        metrics.EVENTS_FAILED.labels("outbox").inc()
        log.exception("cannot build the event of %s[%s]", sender.name, sender.request.id)
        return
    emit_safely(event)


@task_failure.connect(weak=False)
def _on_task_failure(
    sender: Any = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    name = getattr(sender, "name", "")
    if not _enabled() or not name.startswith("redundancy."):
        return
    try:
        event = failure_event(name, sender.request, exception or Exception("unknown"), args, kwargs)
    except Exception:
        metrics.EVENTS_FAILED.labels("outbox").inc()
        log.exception("cannot build the failure event of %s", name)
        return
    emit_safely(event)


# --- the relay beside workers ---------------------------------------------------------------

_worker_relay: Any = None


@worker_ready.connect(weak=False)
def _start_relay_in_worker(**_: Any) -> None:
    """Start ``crd events relay`` as a child of the worker's main process.

    A process, not a thread: a thread in the prefork parent could hold a lock (a metric's,
    a client's) at the moment the pool forks a replacement child, which would then hang;
    and the relay's work never competes with the parent's dispatching for the GIL. It
    exits with the worker (SIGTERM on shutdown, or when it sees its parent gone).
    """
    global _worker_relay
    import subprocess
    import sys

    from redundancy.config import get_settings

    s = get_settings()
    if not (s.events_enabled and s.events_relay_in_worker) or s.embedded:
        return
    try:
        _worker_relay = subprocess.Popen(
            [sys.executable, "-m", "redundancy", "events", "relay", "--parent", str(os.getpid())]
        )
    except Exception:
        log.exception("the outbox relay could not start; events wait in the outbox")


@worker_shutdown.connect(weak=False)
def _stop_relay_in_worker(**_: Any) -> None:
    global _worker_relay
    proc, _worker_relay = _worker_relay, None
    if proc is not None and proc.poll() is None:
        import subprocess

        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
