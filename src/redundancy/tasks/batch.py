"""Batch jobs: staged documents, a chord of chunk tasks, one merge.

A batch never travels as one giant message: its documents are staged once in the job
store (``stage_batch``) and every sub-task carries only ``(batch_id, chunk numbers)``.

    header: analyze_chunk(c) for every chunk c            -> per-item analyses or errors
            pair_shard(i, j) for every chunk pair i <= j  -> near-duplicate pairs
    body:   merge_batch                                   -> BatchResult (clusters)

Item-level problems (empty text, not text, too long) are reported per item and never
fail the batch; infrastructure errors are retried; a lost staging area fails loudly.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from celery import chord
from celery.canvas import Signature
from celery.result import allow_join_result

from redundancy.config import get_settings
from redundancy.core import (
    BatchItemResult,
    BatchResult,
    Document,
    ItemError,
    analyze,
    assemble,
    pairs_between,
    validate_text,
)
from redundancy.errors import InvalidInputError, RedundancyError
from redundancy.events.bridge import batch_event, emit
from redundancy.events.models import BatchProcessingCompletedEvent
from redundancy.events.webhooks import delivery_id
from redundancy.tasks.schemas import BatchRequest, coerce_items, validate
from redundancy.workers import app
from redundancy.workers.jobstore import get_job_store

log = logging.getLogger(__name__)


class StagedDocumentsMissingError(RedundancyError):
    """A batch's staged documents are gone (expired after BATCH_TTL, or deleted)."""


@dataclass(frozen=True)
class StagedBatch:
    """A batch whose documents are in the job store, with the canvas that processes it."""

    batch_id: str
    count: int
    canvas: Signature
    task_count: int
    """Sub-tasks in the chord header (the progress bar's total)."""


def chunk_count(count: int, chunk_size: int) -> int:
    return max(1, math.ceil(count / chunk_size))


def stage_batch(
    items: Iterable[Any],
    threshold: float = 0.8,
    algorithm: str = "ratio",
    webhook_url: str | None = None,
    *,
    batch_id: str | None = None,
) -> StagedBatch:
    """Validate, store the documents once, and build the chord (not yet sent).

    Producers with large batches call this (the CLI does), then ``canvas.apply_async()``;
    ``process_batch`` does the same on a worker for callers that pass items inline.
    """
    req = validate(
        BatchRequest,
        items=list(items),
        threshold=threshold,
        algorithm=algorithm,
        webhook_url=webhook_url,
    )
    settings = get_settings()
    batch_id = batch_id or uuid.uuid4().hex
    docs = coerce_items(req.items)
    get_job_store().stage(batch_id, docs, settings.batch_ttl)
    size = settings.batch_chunk_size
    chunks = chunk_count(len(docs), size)
    params = {"count": len(docs), "chunk_size": size, "threshold": req.threshold,
              "algorithm": req.algorithm}
    header = [analyze_chunk.si(batch_id, c, **params) for c in range(chunks)]
    header += [
        pair_shard.si(batch_id, i, j, **params) for i in range(chunks) for j in range(i, chunks)
    ]
    body = merge_batch.s(batch_id, webhook_url=req.webhook_url, **params)
    canvas = chord(header, body)
    canvas.freeze(batch_id)  # the final result's id is the batch id
    return StagedBatch(batch_id, len(docs), canvas, len(header))


@app.task(name="redundancy.process_batch", bind=True)
def process_batch(
    self: Any,
    items: list[Any],
    threshold: float = 0.8,
    webhook_url: str | None = None,
    algorithm: str = "ratio",
) -> Any:
    """Analyse many texts and find near-duplicate pairs and clusters among them.

    ``items``: texts, or ``{"id": ..., "text": ...}`` dicts. The result (a BatchResult
    dict) arrives on this task's AsyncResult; the batch id is this task's id.
    """
    staged = stage_batch(items, threshold, algorithm, webhook_url, batch_id=self.request.id)
    if self.request.is_eager:
        # Embedded default: run the chord inline (Celery's eager replace would refuse to
        # join a group from inside a task).
        with allow_join_result():
            return staged.canvas.apply().get()
    return self.replace(staged.canvas)


def _positions(chunk: int, chunk_size: int, count: int) -> range:
    return range(chunk * chunk_size, min((chunk + 1) * chunk_size, count))


def _load(batch_id: str, chunk: int, chunk_size: int, count: int) -> list[tuple[int, str, Any]]:
    positions = _positions(chunk, chunk_size, count)
    loaded = get_job_store().load(batch_id, positions)
    missing = [p for p, doc in zip(positions, loaded, strict=True) if doc is None]
    if missing:
        raise StagedDocumentsMissingError(
            f"batch {batch_id}: {len(missing)} staged documents are missing (first at "
            f"position {missing[0]}); they expire after BATCH_TTL seconds"
        )
    return [(p, doc[0], doc[1]) for p, doc in zip(positions, loaded, strict=True) if doc]


@app.task(name="redundancy.batch.analyze_chunk")
def analyze_chunk(
    batch_id: str, chunk: int, *, count: int, chunk_size: int, threshold: float, algorithm: str
) -> dict[str, Any]:
    """Per-item analysis of one chunk; a bad item becomes an error entry, not a failure."""
    settings = get_settings()
    items = []
    for position, doc_id, text in _load(batch_id, chunk, chunk_size, count):
        try:
            result = analyze(
                text,
                threshold,
                algorithm=algorithm,
                max_chars=settings.max_text_chars,
                workers=settings.cdist_workers,
            )
            item = BatchItemResult(position=position, id=doc_id, analysis=result)
        except Exception as exc:  # one item never fails the batch
            if not isinstance(exc, InvalidInputError):
                log.exception("batch %s item %s failed", batch_id, doc_id)
            item = BatchItemResult(
                position=position, id=doc_id, error=ItemError(type=type(exc).__name__, message=str(exc))
            )
        items.append(item.model_dump(mode="json"))
    return {"kind": "analysis", "chunk": chunk, "items": items}


@app.task(name="redundancy.batch.pair_shard")
def pair_shard(
    batch_id: str,
    left: int,
    right: int,
    *,
    count: int,
    chunk_size: int,
    threshold: float,
    algorithm: str,
) -> dict[str, Any]:
    """Near-duplicate pairs inside one chunk (left == right) or across two chunks."""
    settings = get_settings()

    def documents(chunk: int) -> list[Document]:
        docs = []
        for position, _id, text in _load(batch_id, chunk, chunk_size, count):
            try:
                validate_text(text, max_chars=settings.max_text_chars)
            except InvalidInputError:
                continue  # reported by analyze_chunk
            docs.append(Document.from_text(position, text))
        return docs

    left_docs = documents(left)
    right_docs = None if left == right else documents(right)
    pairs = pairs_between(
        left_docs, right_docs, threshold, algorithm, workers=settings.cdist_workers
    )
    return {"kind": "pairs", "left": left, "right": right, "pairs": [list(p) for p in pairs]}


@app.task(name="redundancy.batch.merge", bind=True)
def merge_batch(
    self: Any,
    parts: list[dict[str, Any]],
    batch_id: str,
    *,
    count: int,
    chunk_size: int,
    threshold: float,
    algorithm: str,
    webhook_url: str | None = None,
) -> dict[str, Any]:
    """Join the chunk results into one BatchResult, announce it, release the documents.

    ``batch.completed`` is written to the outbox here rather than from a signal, so the
    webhook carries the very same event; an outbox failure retries the merge, and a re-run
    repeats the event with the same ``event_id``.
    """
    items = sorted(
        (BatchItemResult.model_validate(i) for p in parts if p["kind"] == "analysis" for i in p["items"]),
        key=lambda item: item.position,
    )
    if len(items) != count:
        raise RedundancyError(f"batch {batch_id}: merged {len(items)} items of {count}")
    scored = [tuple(pair) for p in parts if p["kind"] == "pairs" for pair in p["pairs"]]
    names = [item.id for item in items]
    hashes = [item.analysis.content_hash if item.analysis else None for item in items]
    found = assemble(names, hashes, scored, threshold, algorithm)  # type: ignore[arg-type]
    failed = sum(1 for item in items if item.error is not None)
    result = BatchResult(
        batch_id=batch_id,
        document_count=count,
        succeeded=count - failed,
        failed=failed,
        unique_count=found.unique_count,
        threshold=threshold,
        algorithm=algorithm,
        items=items,
        pairs=found.pairs,
        clusters=found.clusters,
    )
    summary = result.model_dump(mode="json")
    event = batch_event(self.request, summary)
    emit(event)
    if webhook_url:
        _schedule_webhook(webhook_url, event)
    try:
        get_job_store().delete(batch_id)
    except Exception:  # the TTL removes them anyway
        log.warning("could not delete staged documents of batch %s", batch_id, exc_info=True)
    return summary


def _schedule_webhook(url: str, event: BatchProcessingCompletedEvent) -> None:
    """Deliver ``event`` to ``url`` in its own task (retries wait on the broker, not here)."""
    from redundancy.tasks.webhooks import deliver_webhook

    event_id = str(event.event_id)
    deliver_webhook.delay(url, event.model_dump_json(), event_id=event_id,
                          event_type=event.event_type, delivery_id=delivery_id(event_id, url),
                          aggregate_id=event.aggregate_id)
