"""Batch jobs: staged documents, a chord of chunk tasks, one merge.

A batch never travels as one giant message: its documents are staged once in the job
store (``stage_batch``) and every sub-task carries only ``(batch_id, chunk numbers)``.

    header: analyze_chunk(c) for every chunk c            -> per-item analyses or errors
            pair_shard(i, j) for every chunk pair i <= j  -> near-duplicate pairs
    body:   merge_batch                                   -> BatchResult (clusters)

That is the canvas of the ``all-pairs`` and ``exact`` search modes (``pair_shard`` runs
the mode's search on its two chunks). The ``indexed`` mode replaces the pair shards with
three phases (``redundancy.tasks.search``): lsh_sign per chunk, then lsh_bucket per key
partition, then lsh_verify per chunk in the chord header next to analyze_chunk.

Item-level problems (empty text, not text, too long) are reported per item and never
fail the batch; infrastructure errors are retried; a lost staging area fails loudly.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from celery import chain, chord, group
from celery.canvas import Signature
from celery.result import allow_join_result

from redundancy import keys
from redundancy.config import get_settings
from redundancy.core import (
    DEFAULT_ALGORITHM,
    DEFAULT_THRESHOLD,
    BatchItemResult,
    BatchResult,
    Document,
    DocumentPair,
    ItemError,
    LSHParams,
    SearchMode,
    analyze,
    assemble,
    expand_identical,
    get_scorer,
    normalise,
    pairs_between,
    resolve_mode,
    validate_text,
)
from redundancy.errors import InvalidInputError, RedundancyError
from redundancy.events.bridge import batch_event, emit
from redundancy.events.models import BatchProcessingCompletedEvent
from redundancy.events.webhooks import delivery_id
from redundancy.tasks.schemas import BatchOptions, iter_items, staged_text, validate
from redundancy.workers import app
from redundancy.workers import routing as names
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
    """Sub-tasks before the merge, every phase (the progress bar's total)."""
    mode: SearchMode = "all-pairs"
    """The near-duplicate search the canvas runs."""
    pair_task_ids: tuple[str, ...] = ()
    """Ids of the sub-tasks that return pairs (pair_shard / lsh_verify), so a producer can
    read their pairs as soon as each finishes, before the merge."""


def chunk_count(count: int, chunk_size: int) -> int:
    return max(1, math.ceil(count / chunk_size))


def stage_batch(
    items: Iterable[Any],
    threshold: float = DEFAULT_THRESHOLD,
    algorithm: str = DEFAULT_ALGORITHM,
    webhook_url: str | None = None,
    *,
    batch_id: str | None = None,
    mode: str = "auto",
    keep_texts: bool = False,
) -> StagedBatch:
    """Validate, store the documents once, and build the canvas (not yet sent).

    ``items`` may be any iterable, a generator over a huge JSONL file included: documents
    are written to the job store as they come (only their ids stay in memory). ``mode``
    ``"auto"`` picks by the number of documents (``redundancy.core.resolve_mode``);
    ``keep_texts`` keeps the best pairs' texts after the merge (``keep_pair_texts``).
    Producers with large batches call this (the CLI does), then ``canvas.apply_async()``;
    ``process_batch`` does the same on a worker for callers that pass items inline.
    """
    opts = validate(
        BatchOptions, threshold=threshold, algorithm=algorithm, webhook_url=webhook_url, mode=mode
    )
    settings = get_settings()
    batch_id = batch_id or uuid.uuid4().hex
    store = get_job_store()
    try:
        count = store.stage(batch_id, iter_items(items), settings.batch_ttl)
    except Exception:
        store.delete(batch_id)  # a duplicate id (or an outage) half-way: drop what was staged
        raise
    if count == 0:
        raise InvalidInputError("invalid batch: it has no items")
    used = resolve_mode(opts.mode, count, opts.algorithm, opts.threshold)
    size = settings.batch_chunk_size
    chunks = chunk_count(count, size)
    params = {
        "count": count,
        "chunk_size": size,
        "threshold": opts.threshold,
        "algorithm": opts.algorithm,
    }
    analyses = [analyze_chunk.si(batch_id, c, **params) for c in range(chunks)]
    kept = {"keep_texts": True} if keep_texts else {}  # the HTTP API's results page
    body = merge_batch.s(batch_id, webhook_url=opts.webhook_url, mode=used, **kept, **params)
    if used == "indexed":
        from redundancy.tasks.search import lsh_bucket, lsh_sign, lsh_verify, partition_count

        lsh = LSHParams.for_threshold(opts.threshold, count)
        parts = partition_count(count, lsh)
        lsh_args = {"bands": lsh.bands, "rows": lsh.rows, "shingle": lsh.shingle, "seed": lsh.seed}
        sign = [
            lsh_sign.si(batch_id, c, lsh=lsh_args, partitions=parts, **params)
            for c in range(chunks)
        ]
        bucket = [lsh_bucket.si(batch_id, p, **params) for p in range(parts)]
        pairing = [
            lsh_verify.si(batch_id, c, **params).set(task_id=uuid.uuid4().hex)
            for c in range(chunks)
        ]
        canvas: Signature = chain(group(sign), group(bucket), chord(analyses + pairing, body))
        task_count = len(sign) + len(bucket) + len(analyses) + len(pairing)
    else:
        pairing = [
            pair_shard.si(batch_id, i, j, mode=used, **params).set(task_id=uuid.uuid4().hex)
            for i in range(chunks)
            for j in range(i, chunks)
        ]
        canvas = chord(analyses + pairing, body)
        task_count = len(analyses) + len(pairing)
    canvas.freeze(batch_id)  # the final result's id is the batch id
    ids = tuple(str(sig.options["task_id"]) for sig in pairing)
    return StagedBatch(batch_id, count, canvas, task_count, used, ids)


def advance_progress(batch_id: str) -> None:
    """Count one finished sub-task (the CLI's progress on a cluster); never fails a job."""
    try:
        get_job_store().advance(batch_id, get_settings().batch_ttl)
    except Exception:
        log.warning("could not count progress of batch %s", batch_id, exc_info=True)


@app.task(name=names.PROCESS_BATCH, bind=True)
def process_batch(
    self: Any,
    items: list[Any],
    threshold: float = DEFAULT_THRESHOLD,
    webhook_url: str | None = None,
    algorithm: str = DEFAULT_ALGORITHM,
    mode: str = "auto",
) -> Any:
    """Analyse many texts and find near-duplicate pairs and clusters among them.

    ``items``: texts, or ``{"id": ..., "text": ...}`` dicts. ``mode``: near-duplicate
    search, ``auto`` (default), ``exact``, ``indexed`` or ``all-pairs``. The result (a
    BatchResult dict) arrives on this task's AsyncResult; the batch id is this task's id.
    """
    staged = stage_batch(
        items, threshold, algorithm, webhook_url, batch_id=self.request.id, mode=mode
    )
    if self.request.is_eager:
        # Embedded default: run the chord inline (Celery's eager replace would refuse to
        # join a group from inside a task).
        with allow_join_result():
            return staged.canvas.apply().get()
    return self.replace(staged.canvas)


def _positions(chunk: int, chunk_size: int, count: int) -> range:
    return range(chunk * chunk_size, min((chunk + 1) * chunk_size, count))


def load_chunk(
    batch_id: str, chunk: int, chunk_size: int, count: int
) -> list[tuple[int, str, Any]]:
    """``(position, id, text)`` of one chunk's staged documents; missing ones fail loudly."""
    return load_positions(batch_id, _positions(chunk, chunk_size, count))


def load_positions(batch_id: str, positions: Sequence[int]) -> list[tuple[int, str, Any]]:
    """``(position, id, text)`` of staged documents; missing ones fail loudly."""
    loaded = get_job_store().load(batch_id, positions)
    missing = [p for p, doc in zip(positions, loaded, strict=True) if doc is None]
    if missing:
        raise StagedDocumentsMissingError(
            f"batch {batch_id}: {len(missing)} staged documents are missing (first at "
            f"position {missing[0]}); they expire after BATCH_TTL seconds"
        )
    return [(p, doc[0], doc[1]) for p, doc in zip(positions, loaded, strict=True) if doc]


@app.task(name=names.BATCH_ANALYZE_CHUNK)
def analyze_chunk(
    batch_id: str, chunk: int, *, count: int, chunk_size: int, threshold: float, algorithm: str
) -> dict[str, Any]:
    """Per-item analysis of one chunk; a bad item becomes an error entry, not a failure."""
    settings = get_settings()
    items = []
    for position, doc_id, text in load_chunk(batch_id, chunk, chunk_size, count):
        try:
            result = analyze(
                staged_text(text),
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
                position=position,
                id=doc_id,
                error=ItemError(type=type(exc).__name__, message=str(exc)),
            )
        items.append(item.model_dump(mode="json"))
    advance_progress(batch_id)
    return {"kind": "analysis", "chunk": chunk, "items": items}


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
    settings = get_settings()

    def documents(chunk: int) -> list[Document]:
        docs = []
        for position, _id, text in load_chunk(batch_id, chunk, chunk_size, count):
            try:
                validate_text(text, max_chars=settings.max_text_chars)
            except InvalidInputError:
                continue  # reported by analyze_chunk
            docs.append(Document.from_text(position, text))
        return docs

    left_docs = documents(left)
    right_docs = None if left == right else documents(right)
    pairs = pairs_between(
        left_docs, right_docs, threshold, algorithm, workers=settings.cdist_workers, mode=mode
    )
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
) -> dict[str, Any]:
    """Join the chunk results into one BatchResult, announce it, release the documents
    (keeping the texts of the best pairs for ``BATCH_TTL`` when ``keep_texts``).

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
    scored = [tuple(pair) for p in parts if p["kind"] == "pairs" for pair in p["pairs"]]
    names = [item.id for item in items]
    hashes = [item.analysis.content_hash if item.analysis else None for item in items]
    if mode == "indexed":  # the LSH phases searched first copies only
        self_score = _self_score(batch_id, algorithm, hashes, chunk_size)
        scored = expand_identical(scored, hashes, self_score, threshold)
    found = assemble(
        names,
        hashes,
        scored,
        threshold,
        algorithm,  # type: ignore[arg-type]
        mode=mode,
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
        pairs=found.pairs,
        clusters=found.clusters,
    )
    summary = result.model_dump(mode="json")
    event = batch_event(self.request, summary)
    emit(event)
    if webhook_url:
        _schedule_webhook(webhook_url, event)
    if keep_texts:
        keep_pair_texts(batch_id, found.pairs)  # the results page's diff view (redundancy.api)
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
    from redundancy.tasks.search import partition_count

    lsh = LSHParams.for_threshold(threshold, count)
    return {"partitions": partition_count(count, lsh), "chunks": chunk_count(count, chunk_size)}


def _self_score(
    batch_id: str, algorithm: str, hashes: Sequence[str | None], chunk_size: int
) -> Callable[[int], float]:
    """Score against itself of the first copy of every repeated text (the pairs of
    identical copies), loaded a chunk at a time rather than one round trip per text."""
    first: dict[str, int] = {}
    repeated: set[int] = set()
    for position, digest in enumerate(hashes):
        if digest in first:
            repeated.add(first[digest])
        elif digest is not None:
            first[digest] = position
    scorer = get_scorer(algorithm)
    positions = sorted(repeated)
    scores: dict[int, float] = {}
    for start in range(0, len(positions), chunk_size):
        for position, _id, text in load_positions(batch_id, positions[start : start + chunk_size]):
            norm = normalise(text)
            scores[position] = float(scorer(norm, norm, processor=None))
    return scores.__getitem__


def _schedule_webhook(url: str, event: BatchProcessingCompletedEvent) -> None:
    """Deliver ``event`` to ``url`` in its own task (retries wait on the broker, not here)."""
    from redundancy.tasks.webhooks import deliver_webhook

    event_id = str(event.event_id)
    deliver_webhook.delay(
        url,
        event.model_dump_json(),
        event_id=event_id,
        event_type=event.event_type,
        delivery_id=delivery_id(event_id, url),
        aggregate_id=event.aggregate_id,
    )
