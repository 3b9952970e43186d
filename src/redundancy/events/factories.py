"""Event factories: a finished job's result (or failure) becomes its domain event.

Pure functions of the Celery request and the result dict; ``redundancy.events.signals``
calls them from Celery's signals and the batch merge calls ``batch_event`` itself. Which
jobs emit (batch sub-tasks emit nothing, or a batch would flood the bus):

    redundancy.analyze_content  -> analysis.completed     (aggregate: content hash)
    redundancy.compare_texts    -> similarity.completed   (aggregate: hash1:hash2)
    redundancy.batch.merge      -> batch.completed        (emitted by the merge itself,
                                                            so its webhook carries it)
    redundancy.webhooks.deliver -> webhook.delivered      (aggregate: the batch announced)
    any of those failing for good, or a batch's sub-task -> job.failed

Every event id is deterministic (``event_id_for(type, job id)``): a redelivered job
writes the same event again, and consumers drop the repeat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redundancy import names
from redundancy.correlation import correlation_id_of
from redundancy.events.models import (
    ANALYSIS_COMPLETED,
    BATCH_COMPLETED,
    JOB_FAILED,
    SIMILARITY_COMPLETED,
    WEBHOOK_DELIVERED,
    AnalysisCompletedEvent,
    AnalysisCompletedPayload,
    BatchProcessingCompletedEvent,
    BatchProcessingCompletedPayload,
    DomainEvent,
    Job,
    JobFailedEvent,
    JobFailedPayload,
    SimilarityCompletedEvent,
    SimilarityCompletedPayload,
    WebhookDeliveredEvent,
    event_id_for,
)
from redundancy.events.webhooks import endpoint_id
from redundancy.observability.context import current_trace_id

MAX_EVENT_BYTES = 512 * 1024
"""Larger analysis events drop their sentence and phrase lists (Kafka's default limit is 1 MiB)."""
ERROR_MESSAGE_CHARS = 2_000


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
        payload=AnalysisCompletedPayload(
            content_hash=result["content_hash"],
            redundancy_score=result["redundancy_score"],
            analysis_result=analysis,
        ),
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
        payload=SimilarityCompletedPayload(
            text1_hash=result["text1_hash"],
            text2_hash=result["text2_hash"],
            similarity_score=result["similarity_score"],
            is_similar=result["is_similar"],
            algorithm=result.get("algorithm"),
            threshold=result.get("threshold"),
        ),
    )


def batch_event(request: Any, result: dict[str, Any]) -> BatchProcessingCompletedEvent:
    """batch.completed from a BatchResult dict (one per batch: keyed on the batch id)."""
    batch_id = result["batch_id"]
    return BatchProcessingCompletedEvent(
        **_envelope(request, BATCH_COMPLETED, batch_id),
        payload=BatchProcessingCompletedPayload(
            batch_id=batch_id,
            total_jobs=result["document_count"],
            completed_jobs=result["succeeded"],
            failed_jobs=result["failed"],
            unique_count=result.get("unique_count"),
            pair_count=len(result.get("pairs", [])),
            duplicate_group_count=len(result.get("duplicate_groups", [])),
            document_pair_count=result.get("document_pair_count"),
            cluster_count=len(result.get("clusters", [])),
            threshold=result.get("threshold"),
            algorithm=result.get("algorithm"),
        ),
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
    if name == names.BATCH_MERGE and len(args) > 1:
        return str(args[1])
    if name.startswith(names.BATCH_SUBTASK_PREFIX) and args:
        return str(args[0])
    return str(request.id)


def failure_event(
    name: str, request: Any, exc: BaseException, args: Any, kwargs: Any
) -> DomainEvent | None:
    message = f"{exc}"[:ERROR_MESSAGE_CHARS]
    if name == names.WEBHOOK_DELIVER:
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
    job: Job
    if name in (names.ANALYZE_CONTENT, names.COMPARE_TEXTS):
        job = "analysis" if name == names.ANALYZE_CONTENT else "similarity"
        aggregate = str(request.id)
    elif name == names.PROCESS_BATCH or name.startswith(names.BATCH_SUBTASK_PREFIX):
        job, aggregate = "batch", _batch_id(name, request, args, kwargs)
    else:
        return None
    return JobFailedEvent(
        **_envelope(request, JOB_FAILED, aggregate),
        aggregate_id=aggregate,
        payload=JobFailedPayload(
            job=job,
            task_name=name,
            error_type=type(exc).__name__,
            error_message=message,
            retries=request.retries or 0,
        ),
    )


SUCCESS_EVENTS: dict[str, Callable[[Any, dict[str, Any]], DomainEvent]] = {
    names.ANALYZE_CONTENT: analysis_event,
    names.COMPARE_TEXTS: similarity_event,
    names.WEBHOOK_DELIVER: webhook_event,
}
"""Task name -> event builder for ``task_success`` (the merge emits its own)."""
