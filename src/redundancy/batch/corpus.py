"""A batch against a corpus (``crd batch --corpus NAME [--add]``): each document's matches
among the corpus's earlier content, and the batch added to it all or nothing.

    chord header: corpus_match(c) for every chunk c   -> matches (``Corpus.find_similar_many``)
    merge_batch:  begins the saga (``redundancy.corpus.saga``) when adding
    saga:         saga_step(0) -> saga_step(1) -> ... -> saga_finish
                  a step that fails for good -> saga_compensate (undo in reverse)

Matching runs with the rest of the chord, before any document is added, so "earlier"
means: in the corpus when the batch ran. The steps run one after another, each sending
the next, so one saga has one writer and its compensation is exact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from redundancy import names
from redundancy.batch.staging import advance_progress, load_chunk, staged_text
from redundancy.batch.store import get_job_store
from redundancy.config import get_settings
from redundancy.core.corpus import MIN_CORPUS_THRESHOLD, QUERY_MODES, validate_doc_id
from redundancy.core.models import CorpusMatch, CorpusReport, CorpusSaga
from redundancy.core.saga import TERMINAL_STATES, SagaRecord
from redundancy.core.text import validate_text
from redundancy.corpus import get_corpus
from redundancy.corpus.saga import Saga
from redundancy.corpus.service import MAX_QUERY_LIMIT
from redundancy.correlation import correlation_id_of
from redundancy.errors import InvalidInputError
from redundancy.workers import app
from redundancy.workers.base import RedundancyTask

log = logging.getLogger(__name__)

DEFAULT_CORPUS_LIMIT = 20


def check_corpus_options(corpus: str, threshold: float, mode: str, limit: int) -> None:
    """Refuse bad corpus options before anything is staged or changed: an unknown corpus,
    a threshold below its minimum, an unknown mode or limit."""
    found = get_corpus(corpus)  # UnknownCorpusError names the corpora there are
    if threshold < found.config.threshold:
        raise InvalidInputError(
            f"threshold {threshold} is below the minimum of corpus {corpus!r} "
            f"({found.config.threshold}; corpora start at {MIN_CORPUS_THRESHOLD})"
        )
    if mode not in QUERY_MODES:
        raise InvalidInputError(f"unknown corpus mode {mode!r}; choose one of {QUERY_MODES}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_QUERY_LIMIT:
        raise InvalidInputError(f"corpus limit must be from 1 to {MAX_QUERY_LIMIT}, got {limit!r}")


def checked_for_add(items: Iterable[Any], problems: list[str]) -> Iterator[Any]:
    """The items as they come, each checked as the corpus would take it ({id, text} with a
    valid id and text); problems are listed for the caller, who refuses the batch."""
    max_chars = get_settings().max_text_chars
    for position, item in enumerate(items):
        try:
            if not isinstance(item, dict) or "id" not in item:
                raise InvalidInputError("adding to a corpus needs {id, text} items")
            validate_doc_id(item["id"])
            validate_text(item.get("text"), max_chars=max_chars)
        except InvalidInputError as exc:
            problems.append(f"item {position}: {exc}")
        yield item


@app.task(name=names.BATCH_CORPUS_MATCH)
def corpus_match(
    batch_id: str,
    chunk: int,
    *,
    count: int,
    chunk_size: int,
    corpus: str,
    threshold: float,
    mode: str = "indexed",
    limit: int = DEFAULT_CORPUS_LIMIT,
    algorithm: str | None = None,
) -> dict[str, Any]:
    """One chunk's matches among the corpus's documents (an item's own id excluded),
    scored with the corpus's scorer (the batch's ``algorithm`` is for its own pairs);
    items that are not valid text have none (``analyze_chunk`` reports them)."""
    del algorithm
    found = get_corpus(corpus)
    docs = []
    for position, doc_id, text in load_chunk(batch_id, chunk, chunk_size, count):
        try:
            docs.append(
                (position, doc_id, validate_text(staged_text(text), max_chars=found.max_chars))
            )
        except InvalidInputError:
            continue
    results = found.find_similar_many(
        [t for _, _, t in docs], threshold, min(limit + 1, MAX_QUERY_LIMIT), mode
    )
    matches = {
        str(position): [[m.id, m.score] for m in result.matches if m.id != doc_id][:limit]
        for (position, doc_id, _), result in zip(docs, results, strict=True)
    }
    advance_progress(batch_id)
    return {"kind": "corpus", "chunk": chunk, "matches": matches}


def corpus_report(
    parts: list[dict[str, Any]], corpus: str, threshold: float, mode: str
) -> tuple[dict[int, list[CorpusMatch]], CorpusReport]:
    """The matches by position, and the report without its saga."""
    by_position = {
        int(p): [CorpusMatch(id=i, score=s) for i, s in found]
        for part in parts
        if part["kind"] == "corpus"
        for p, found in part["matches"].items()
    }
    report = CorpusReport(
        name=corpus,
        threshold=threshold,
        algorithm=get_corpus(corpus).config.algorithm,
        mode="exact" if mode == "exact" else "indexed",
        matched_documents=sum(1 for m in by_position.values() if m),
        matches=sum(len(m) for m in by_position.values()),
    )
    return by_position, report


def saga_view(record: SagaRecord) -> CorpusSaga:
    return CorpusSaga(
        saga_id=record.saga_id,
        state=record.state,
        steps_total=record.steps_total,
        steps_done=record.steps_done,
        cause=record.cause,
        added=record.added,
        replaced=record.replaced,
    )


def wait_saga(corpus: str, saga_id: str, timeout: float | None, poll: float = 0.5) -> SagaRecord:
    """The saga's record once it ended (completed, compensated or failed); on a timeout,
    as it stands (it keeps running on the workers)."""
    saga = Saga(get_corpus(corpus), saga_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        record = saga.require()
        if record.state in TERMINAL_STATES:
            return record
        if deadline is not None and time.monotonic() > deadline:
            return record
        time.sleep(poll)


def begin_saga(
    request: Any, batch_id: str, corpus: str, *, count: int, chunk_size: int, steps: int
) -> SagaRecord:
    """Begin adding the batch (the merge calls this): in-process on the embedded default
    (every step, or the compensation, before it returns), else by sending step 0."""
    saga = Saga(get_corpus(corpus), batch_id)
    record = saga.begin(batch_id, steps, count, get_settings().batch_ttl)
    args = {"corpus": corpus, "saga_id": batch_id, "count": count, "chunk_size": chunk_size}
    if request.is_eager and record.state in ("running", "compensating"):
        return _run_inline(saga, batch_id, correlation_id_of(request), **args)
    if record.state == "running":  # a merge that runs again sends it again: steps are idempotent
        saga_step.apply_async((batch_id, record.steps_done), {**args, "steps": steps})
    return record


def _run_inline(saga: Saga, batch_id: str, correlation: str | None, **args: Any) -> SagaRecord:
    record = saga.require()
    step = record.steps_done
    if record.state == "compensating":  # the merge runs again after a failed compensation
        return saga.compensate(record.cause or "", record.failed_step, correlation_id=correlation)
    try:
        while step < record.steps_total:
            items = _items(batch_id, step, args["chunk_size"], args["count"])
            saga.run_step(step, items, correlation_id=correlation)
            step += 1
        record = saga.complete()
    except Exception as exc:
        log.exception("saga %s failed at step %s", batch_id, step)
        record = saga.compensate(_cause(exc, step), step, correlation_id=correlation)
    _release_staged(batch_id)
    return record


def _items(batch_id: str, step: int, chunk_size: int, count: int) -> list[tuple[str, str]]:
    return [(d, staged_text(t)) for _, d, t in load_chunk(batch_id, step, chunk_size, count)]


def _cause(exc: BaseException, step: int | None) -> str:
    where = "" if step is None else f"step {step}: "
    return f"{where}{type(exc).__name__}: {exc}"


def _release_staged(batch_id: str) -> None:
    try:
        get_job_store().delete(batch_id)
    except Exception:  # the TTL removes them anyway
        log.warning("could not delete staged documents of batch %s", batch_id, exc_info=True)


class SagaStepTask(RedundancyTask):
    """A saga step: when it fails for good (after the retries of infrastructure errors,
    or at once for any other error), the saga is compensated."""

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        super().on_failure(exc, task_id, args, kwargs, einfo)
        try:
            step = args[1] if len(args) > 1 else kwargs.get("step")
            saga_compensate.apply_async(
                (args[0],),
                {
                    "corpus": kwargs["corpus"],
                    "saga_id": kwargs["saga_id"],
                    "cause": _cause(exc, step),
                    "failed_step": step,
                },
            )
        except Exception:
            log.exception("could not send the compensation of saga %s", kwargs.get("saga_id"))


@app.task(name=names.BATCH_SAGA_STEP, bind=True, base=SagaStepTask)
def saga_step(
    self: Any,
    batch_id: str,
    step: int,
    *,
    corpus: str,
    saga_id: str,
    count: int,
    chunk_size: int,
    steps: int,
) -> dict[str, Any]:
    """Apply one chunk (``Saga.run_step``: idempotent), then send the next step, or the
    finish after the last."""
    saga = Saga(get_corpus(corpus), saga_id)
    items = _items(batch_id, step, chunk_size, count)
    record = saga.run_step(step, items, correlation_id=correlation_id_of(self.request))
    if record.state == "running":
        args = {"corpus": corpus, "saga_id": saga_id, "count": count, "chunk_size": chunk_size}
        if step + 1 < steps:
            saga_step.apply_async((batch_id, step + 1), {**args, "steps": steps})
        else:
            saga_finish.apply_async((batch_id,), {"corpus": corpus, "saga_id": saga_id})
    return record.model_dump(mode="json", exclude={"created_at", "updated_at"})


@app.task(name=names.BATCH_SAGA_FINISH)
def saga_finish(batch_id: str, *, corpus: str, saga_id: str) -> dict[str, Any]:
    record = Saga(get_corpus(corpus), saga_id).complete()
    _release_staged(batch_id)
    return record.model_dump(mode="json")


class CompensateTask(RedundancyTask):
    """A compensation that fails for good (after its retries) fails the saga, naming
    what to run to resume it, so no one waits on it forever."""

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        super().on_failure(exc, task_id, args, kwargs, einfo)
        try:
            saga = Saga(get_corpus(kwargs["corpus"]), kwargs["saga_id"])
            saga.compensation_failed(f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("could not record the failed compensation of %s", kwargs.get("saga_id"))


@app.task(name=names.BATCH_SAGA_COMPENSATE, bind=True, base=CompensateTask)
def saga_compensate(
    self: Any,
    batch_id: str,
    *,
    corpus: str,
    saga_id: str,
    cause: str,
    failed_step: int | None = None,
) -> dict[str, Any]:
    """Undo the saga's applied steps in reverse (idempotent: redelivered, it resumes)."""
    saga = Saga(get_corpus(corpus), saga_id)
    record = saga.compensate(cause, failed_step, correlation_id=correlation_id_of(self.request))
    _release_staged(batch_id)
    return record.model_dump(mode="json")
