"""A batch's entry points: stage its documents, then build and run its canvas.

    all-pairs, exact:  chord([analyze_chunk(c) ..., pair_shard(i, j) for i <= j ...],
                             merge_batch)
    indexed:           chain(group(lsh_sign(c) ...), group(lsh_bucket(p) ...),
                             chord([analyze_chunk(c) ..., lsh_verify(c) ...], merge_batch))

``pair_shard`` runs the mode's search on its two chunks; the indexed mode replaces the pair
shards with the three LSH phases of ``redundancy.batch.search``. The canvas is frozen with
the batch id, so the merge's result is the batch's result.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from celery import chain, chord, group
from celery.canvas import Signature
from celery.result import allow_join_result

from redundancy import names
from redundancy.batch.corpus import (
    DEFAULT_CORPUS_LIMIT,
    check_corpus_options,
    checked_for_add,
    corpus_match,
)
from redundancy.batch.search import lsh_bucket, lsh_plan, lsh_sign, lsh_verify
from redundancy.batch.staging import chunk_count, stage_documents
from redundancy.batch.store import get_job_store
from redundancy.batch.tasks import analyze_chunk, merge_batch, pair_shard
from redundancy.config import get_settings
from redundancy.core import DEFAULT_ALGORITHM, DEFAULT_THRESHOLD, SearchMode
from redundancy.core.neardup import resolve_mode
from redundancy.errors import InvalidInputError
from redundancy.schemas import BatchOptions, validate
from redundancy.workers import app


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
    analysis_tasks: int = 0
    """How many of the sub-tasks analyse documents (one per chunk); the rest search pairs."""


def stage_batch(
    items: Iterable[Any],
    threshold: float = DEFAULT_THRESHOLD,
    algorithm: str = DEFAULT_ALGORITHM,
    webhook_url: str | None = None,
    *,
    batch_id: str | None = None,
    mode: str = "auto",
    keep_texts: bool = False,
    expand_identical: bool = False,
    corpus: str | None = None,
    add: bool = False,
    corpus_mode: str = "indexed",
    corpus_limit: int = DEFAULT_CORPUS_LIMIT,
) -> StagedBatch:
    """Validate, store the documents once, and build the canvas (not yet sent).

    ``items`` may be any iterable, a generator over a huge JSONL file included: documents
    are written to the job store as they come (only their ids stay in memory). ``mode``
    ``"auto"`` picks by the number of documents (``redundancy.core.resolve_mode``);
    ``keep_texts`` keeps the best pairs' texts after the merge (``keep_pair_texts``).
    Producers with large batches call this (the CLI does), then ``canvas.apply_async()``;
    ``process_batch`` does the same on a worker for callers that pass items inline.
    ``expand_identical``: the result lists every document pair, copies of identical texts
    included, up to ``EXPAND_IDENTICAL_MAX_PAIRS`` (by default identical texts are
    duplicate groups: see ``redundancy.core.duplicates``).

    ``corpus``: also each document's matches among that corpus's documents
    (``corpus_mode`` indexed or exact, at most ``corpus_limit`` each, at ``threshold``,
    which must not be below the corpus's minimum); ``add``: then add the batch to the
    corpus, all or nothing (a saga: ``redundancy.batch.corpus``). Adding needs every item
    as ``{id, text}`` with valid text: any bad item refuses the whole batch here, before
    anything changes.
    """
    opts = validate(
        BatchOptions,
        threshold=threshold,
        algorithm=algorithm,
        webhook_url=webhook_url,
        mode=mode,
        expand_identical=expand_identical,
    )
    if add and corpus is None:
        raise InvalidInputError("add needs a corpus to add the batch to")
    if corpus is not None:
        check_corpus_options(corpus, opts.threshold, corpus_mode, corpus_limit)
    batch_id = batch_id or uuid.uuid4().hex
    problems: list[str] = []
    count = stage_documents(batch_id, checked_for_add(items, problems) if add else items)
    if problems:
        get_job_store().delete(batch_id)
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InvalidInputError(
            "invalid items, nothing was added: " + "; ".join(problems[:5]) + more
        )
    used = resolve_mode(opts.mode, count, opts.algorithm, opts.threshold)
    size = get_settings().batch_chunk_size
    chunks = chunk_count(count, size)
    params = {
        "count": count,
        "chunk_size": size,
        "threshold": opts.threshold,
        "algorithm": opts.algorithm,
    }
    analyses = [analyze_chunk.si(batch_id, c, **params) for c in range(chunks)]
    kept: dict[str, Any] = {"keep_texts": True} if keep_texts else {}  # the results page
    matching = []
    if corpus is not None:
        found = {"corpus": corpus, "mode": corpus_mode}
        matching = [
            corpus_match.si(batch_id, c, limit=corpus_limit, **found, **params)
            for c in range(chunks)
        ]
        kept.update(corpus=corpus, add=add, corpus_mode=corpus_mode)
    body = merge_batch.s(
        batch_id,
        webhook_url=opts.webhook_url,
        mode=used,
        expand_identical=opts.expand_identical,
        **kept,
        **params,
    )
    if used == "indexed":
        lsh, parts = lsh_plan(count, opts.threshold)
        lsh_args = {"bands": lsh.bands, "rows": lsh.rows, "shingle": lsh.shingle, "seed": lsh.seed}
        sign = [
            lsh_sign.si(batch_id, c, lsh=lsh_args, partitions=parts, **params)
            for c in range(chunks)
        ]
        bucket = [lsh_bucket.si(batch_id, p, **params) for p in range(parts)]
        pairing = [_with_id(lsh_verify.si(batch_id, c, **params)) for c in range(chunks)]
        header = analyses + pairing + matching
        canvas: Signature = chain(group(sign), group(bucket), chord(header, body))
        task_count = len(sign) + len(bucket) + len(header)
    else:
        pairing = [
            _with_id(pair_shard.si(batch_id, i, j, mode=used, **params))
            for i in range(chunks)
            for j in range(i, chunks)
        ]
        canvas = chord(analyses + pairing + matching, body)
        task_count = len(analyses) + len(pairing) + len(matching)
    canvas.freeze(batch_id)  # the final result's id is the batch id
    ids = tuple(str(sig.options["task_id"]) for sig in pairing)
    return StagedBatch(batch_id, count, canvas, task_count, used, ids, len(analyses))


def _with_id(signature: Signature) -> Signature:
    """A pair sub-task with its id fixed in advance (a producer follows it by that id)."""
    return signature.set(task_id=uuid.uuid4().hex)


@app.task(name=names.PROCESS_BATCH, bind=True)
def process_batch(
    self: Any,
    items: list[Any],
    threshold: float = DEFAULT_THRESHOLD,
    webhook_url: str | None = None,
    algorithm: str = DEFAULT_ALGORITHM,
    mode: str = "auto",
    expand_identical: bool = False,
    corpus: str | None = None,
    add: bool = False,
    corpus_mode: str = "indexed",
    corpus_limit: int = DEFAULT_CORPUS_LIMIT,
) -> Any:
    """Analyse many texts and find near-duplicate pairs, identical texts and clusters.

    ``items``: texts, or ``{"id": ..., "text": ...}`` dicts. ``mode``: near-duplicate
    search, ``auto`` (default), ``exact``, ``indexed`` or ``all-pairs``. Identical texts
    are duplicate groups unless ``expand_identical`` (see ``stage_batch``). ``corpus``,
    ``add``: each item's matches in a corpus, and the batch added to it all or nothing
    (see ``stage_batch``; the result's ``corpus.saga`` names the saga, whose state
    ``crd corpus jobs`` shows). The result (a BatchResult dict) arrives on this task's
    AsyncResult; the batch id is this task's id.
    """
    staged = stage_batch(
        items,
        threshold,
        algorithm,
        webhook_url,
        batch_id=self.request.id,
        mode=mode,
        expand_identical=expand_identical,
        corpus=corpus,
        add=add,
        corpus_mode=corpus_mode,
        corpus_limit=corpus_limit,
    )
    if self.request.is_eager:
        # Embedded default: run the chord inline (Celery's eager replace would refuse to
        # join a group from inside a task).
        with allow_join_result():
            return staged.canvas.apply().get()
    return self.replace(staged.canvas)
