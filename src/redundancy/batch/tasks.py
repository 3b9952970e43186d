"""The tasks of a batch's chord: per-chunk analyses, pair shards, and the merge.

    header: analyze_chunk(c) for every chunk c            -> per-item analyses or errors
            pair_shard(i, j) for every chunk pair i <= j  -> near-duplicate pairs
            (indexed mode: the LSH phases of ``redundancy.batch.search`` instead)
    body:   merge_batch                                   -> BatchResult (clusters)

The canvas that wires them is ``redundancy.batch.canvas``. Item-level problems (empty
text, not text, too long) are reported per item and never fail the batch;
infrastructure errors are retried; a lost staging area fails loudly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from redundancy import keys, names
from redundancy.batch.corpus import begin_saga, corpus_report, saga_view
from redundancy.batch.search import lsh_plan
from redundancy.batch.staging import (
    advance_progress,
    chunk_count,
    comparable_documents,
    load_chunk,
    load_positions,
    staged_text,
)
from redundancy.batch.store import get_job_store
from redundancy.batch.webhooks import deliver_webhook, delivery_task_id
from redundancy.config import get_settings
from redundancy.core import (
    AnalysisResult,
    BatchItemResult,
    BatchResult,
    ItemError,
    SearchMode,
    analyze,
)
from redundancy.core.cost import PARTIAL_SCORERS, check_partial_length
from redundancy.core.models import GROUPED_FIELDS, DocumentPair
from redundancy.core.neardup import Document, assemble, pairs_between, valid_documents
from redundancy.core.text import normalise, validate_text
from redundancy.errors import InvalidInputError, RedundancyError
from redundancy.events.emitter import emit
from redundancy.events.factories import batch_event
from redundancy.events.models import BatchProcessingCompletedEvent
from redundancy.events.webhooks import delivery_id
from redundancy.workers import app

log = logging.getLogger(__name__)


@app.task(name=names.BATCH_ANALYZE_CHUNK)
def analyze_chunk(
    batch_id: str, chunk: int, *, count: int, chunk_size: int, threshold: float, algorithm: str
) -> dict[str, Any]:
    """Per-item analysis of one chunk; a bad item becomes an error entry, not a failure.

    Copies of one text in the chunk are analysed once (the same string gives the same
    analysis), so a chunk of boilerplate pages costs one analysis.
    """
    settings = get_settings()
    items = []
    done: dict[str, AnalysisResult | InvalidInputError] = {}
    for position, doc_id, text in load_chunk(batch_id, chunk, chunk_size, count):
        try:
            staged = staged_text(text)
            if staged not in done:
                done[staged] = _analysis(staged, threshold, algorithm)
            outcome = done[staged]
            if isinstance(outcome, InvalidInputError):
                raise outcome
            item = BatchItemResult(position=position, id=doc_id, analysis=outcome)
        except Exception as exc:  # one item never fails the batch
            if not isinstance(exc, InvalidInputError):
                log.exception("batch %s item %s failed", batch_id, doc_id)
            item = BatchItemResult(
                position=position,
                id=doc_id,
                error=ItemError(type=type(exc).__name__, message=str(exc)),
                content_hash=_text_hash(position, text, settings.max_text_chars),
            )
        items.append(item.model_dump(mode="json"))
    advance_progress(batch_id, documents=len(items))
    return {"kind": "analysis", "chunk": chunk, "items": items}


def _analysis(text: str, threshold: float, algorithm: str) -> AnalysisResult | InvalidInputError:
    """One item's analysis, or the input error that refuses it (kept, so copies of the
    text are refused without redoing the work). A text too long for a partial scorer to
    compare as a whole fails here too, so the report says why it has no pairs."""
    settings = get_settings()
    try:
        if algorithm in PARTIAL_SCORERS:
            valid = validate_text(text, max_chars=settings.max_text_chars)
            check_partial_length(normalise(valid), algorithm, "document")
        return analyze(
            text,
            threshold,
            algorithm=algorithm,
            max_chars=settings.max_text_chars,
            workers=settings.cdist_workers,
            max_seconds=settings.max_work_seconds,
        )
    except InvalidInputError as exc:
        return exc


def _text_hash(position: int, text: Any, max_chars: int) -> str | None:
    """Content hash of an item whose analysis failed but which is valid text, so the
    merge groups it with its copies and pairs it when the search compared it."""
    docs = valid_documents([(position, text)], max_chars=max_chars)
    return docs[0].content_hash if docs else None


@app.task(name=names.BATCH_PAIR_SHARD)
def pair_shard(
    batch_id: str,
    left: int,
    right: int,
    *,
    count: int,
    chunk_size: int,
    threshold: float,
    algorithm: str,
    mode: SearchMode = "all-pairs",
) -> dict[str, Any]:
    """Near-duplicate pairs inside one chunk (left == right) or across two chunks, found
    by ``mode`` (``all-pairs`` or ``exact``: the same pairs either way)."""

    def documents(chunk: int) -> list[Document]:
        return comparable_documents(load_chunk(batch_id, chunk, chunk_size, count), algorithm)

    left_docs = documents(left)
    right_docs = None if left == right else documents(right)
    workers = get_settings().cdist_workers
    pairs = pairs_between(left_docs, right_docs, threshold, algorithm, workers=workers, mode=mode)
    advance_progress(batch_id)
    return {"kind": "pairs", "left": left, "right": right, "pairs": [list(p) for p in pairs]}


@app.task(name=names.BATCH_MERGE, bind=True)
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
    mode: SearchMode = "all-pairs",
    keep_texts: bool = False,
    expand_identical: bool = False,
    corpus: str | None = None,
    add: bool = False,
    corpus_mode: str = "indexed",
) -> dict[str, Any]:
    """Join the chunk results into one BatchResult, announce it, release the documents
    (keeping the texts of the best pairs for ``BATCH_TTL`` when ``keep_texts``). With a
    corpus, each item carries its matches there; with ``add``, the saga that adds the
    batch begins here (``redundancy.batch.corpus``; its steps read the staged documents,
    so the saga releases them when it ends).

    Pairs arrive between each shard's first copies; ``assemble`` moves them onto the
    batch's representatives and reports identical texts as duplicate groups.

    ``batch.completed`` is written to the outbox here rather than from a signal, so the
    webhook carries the very same event; an outbox failure retries the merge, and a re-run
    repeats the event with the same ``event_id``.
    """
    items = sorted(
        (
            BatchItemResult.model_validate(i)
            for p in parts
            if p["kind"] == "analysis"
            for i in p["items"]
        ),
        key=lambda item: item.position,
    )
    if len(items) != count:
        raise RedundancyError(f"batch {batch_id}: merged {len(items)} items of {count}")
    report = None
    if corpus is not None:
        by_position, report = corpus_report(parts, corpus, threshold, corpus_mode)
        items = [
            i.model_copy(update={"corpus_matches": by_position.get(i.position, [])}) for i in items
        ]
    scored = (
        (int(a), int(b), float(s)) for p in parts if p["kind"] == "pairs" for a, b, s in p["pairs"]
    )
    ids = [item.id for item in items]
    found = assemble(
        ids,
        [item.text_hash for item in items],
        scored,
        threshold,
        algorithm,
        mode=mode,
        expand_identical=expand_identical,
        max_expanded_pairs=get_settings().expand_identical_max_pairs,
    )
    failed = sum(1 for item in items if item.error is not None)
    result = BatchResult(
        batch_id=batch_id,
        document_count=count,
        succeeded=count - failed,
        failed=failed,
        unique_count=found.unique_count,
        threshold=threshold,
        algorithm=algorithm,
        mode=mode,
        items=items,
        **{name: getattr(found, name) for name in GROUPED_FIELDS},
    )
    saga_running = False
    if report is not None and corpus is not None and add:
        record = begin_saga(
            self.request,
            batch_id,
            corpus,
            count=count,
            chunk_size=chunk_size,
            steps=chunk_count(count, chunk_size),
        )
        saga_running = record.state == "running"
        report = report.model_copy(update={"saga": saga_view(record)})
    if report is not None:
        result = result.model_copy(update={"corpus": report})
    summary = result.model_dump(mode="json")
    event = batch_event(self.request, summary)
    emit(event)
    if webhook_url:
        _schedule_webhook(webhook_url, event, batch_id)
    if keep_texts:
        keep_pair_texts(batch_id, found.pairs)  # the results page's diff view (redundancy.api)
    if saga_running:
        return summary  # the saga's steps read the staged documents; it releases them
    try:
        get_job_store().delete(batch_id, **_search_tables(mode, count, chunk_size, threshold))
    except Exception:  # the TTL removes them anyway
        log.warning("could not delete staged documents of batch %s", batch_id, exc_info=True)
    return summary


KEPT_TEXT_DOCUMENTS = 100
"""Documents of a finished batch's best pairs whose texts outlive the merge."""
KEPT_TEXT_CHARS = 100_000
"""Characters kept of each (the page shows fewer; a 1 MB text is not kept whole)."""


def keep_pair_texts(batch_id: str, pairs: Sequence[DocumentPair]) -> None:
    """Keep the texts of the documents in the best-scoring pairs for ``BATCH_TTL``
    (``keys.batch_texts``): the results page shows two of them side by side after the
    staged documents are deleted. A hook: it never fails the merge."""
    try:
        positions: dict[int, None] = {}
        for pair in sorted(pairs, key=lambda p: -p.score):
            if len(positions) >= KEPT_TEXT_DOCUMENTS:
                break
            positions.update({pair.a: None, pair.b: None})
        if not positions:
            return
        kept = {
            doc_id: json.dumps({"id": doc_id, "text": text[:KEPT_TEXT_CHARS]}).encode()
            for _, doc_id, text in load_positions(batch_id, sorted(positions))
            if isinstance(text, str)
        }
        get_job_store().put_blobs({keys.batch_texts(batch_id): kept}, get_settings().batch_ttl)
    except Exception:
        log.warning("could not keep the pair texts of batch %s", batch_id, exc_info=True)


def _search_tables(mode: str, count: int, chunk_size: int, threshold: float) -> dict[str, int]:
    """How many LSH tables an indexed batch wrote (to delete them by name)."""
    if mode != "indexed":
        return {}
    _params, partitions = lsh_plan(count, threshold)
    return {"partitions": partitions, "chunks": chunk_count(count, chunk_size)}


def _schedule_webhook(url: str, event: BatchProcessingCompletedEvent, batch_id: str) -> None:
    """Deliver ``event`` to ``url`` in its own task (retries wait on the broker, not here),
    under an id the producer knows (``delivery_task_id``)."""
    event_id = str(event.event_id)
    deliver_webhook.apply_async(
        (url, event.model_dump_json()),
        {
            "event_id": event_id,
            "event_type": event.event_type,
            "delivery_id": delivery_id(event_id, url),
            "aggregate_id": event.aggregate_id,
        },
        task_id=delivery_task_id(batch_id),
    )
