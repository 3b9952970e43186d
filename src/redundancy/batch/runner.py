"""A producer's side of a batch (what ``crd batch`` runs): stage inputs as they are read,
run the canvas in-process (embedded default) or on the Celery cluster, follow its
progress and hand on pairs as their sub-tasks finish."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from celery.result import AsyncResult
from celery.signals import task_postrun

from redundancy import names
from redundancy.batch.canvas import StagedBatch, stage_batch
from redundancy.batch.store import get_job_store
from redundancy.config import get_settings
from redundancy.core import BatchItemResult, BatchResult, ItemError
from redundancy.errors import InvalidInputError, RedundancyError

POLL_SECONDS = 0.5
FETCH_PER_POLL = 256
"""Pair sub-task results a cluster poll reads at most (keeps each poll cheap)."""

PairSink = Callable[[list[list[Any]]], None]
"""Receives ``[position a, position b, score 0..100]`` lists as sub-tasks find them."""

Advance = Callable[[int], None]
"""Moves a progress display on by a number of finished sub-tasks."""

ProgressDisplay = Callable[[StagedBatch], AbstractContextManager[Advance]]
"""Opens a progress display for a staged batch (its ``task_count`` and ``mode``)."""


class BatchRunError(RedundancyError):
    """A batch failed, or did not finish within the caller's timeout."""


class Input(Protocol):
    """One input read by the producer: ``error`` says why it could not be read."""

    @property
    def id(self) -> str: ...
    @property
    def text(self) -> Any: ...
    @property
    def error(self) -> str | None: ...


def no_progress(_staged: StagedBatch) -> AbstractContextManager[Advance]:
    return nullcontext(lambda _n: None)


def run_batch(
    inputs: Iterable[Input],
    *,
    threshold: float,
    algorithm: str,
    webhook_url: str | None = None,
    progress: ProgressDisplay = no_progress,
    timeout: float | None = None,
    mode: str = "auto",
    on_pairs: PairSink | None = None,
    on_document: Callable[[str, Any], None] | None = None,
    expand_identical: bool = False,
) -> BatchResult:
    """Stage readable inputs as they are read, run the batch, and add unreadable inputs as
    failed items (only those are kept in memory here).

    ``on_document(id, text)`` sees each staged document in order (its position);
    ``on_pairs`` receives each pair sub-task's pairs as soon as it finishes (between the
    sub-task's first copies of each text; the result moves them onto representatives).
    """
    unreadable: list[Input] = []
    seen = 0

    def readable() -> Iterator[dict[str, Any]]:
        nonlocal seen
        for item in inputs:
            seen += 1
            if item.error is None:
                if on_document is not None:
                    on_document(item.id, item.text)
                yield {"id": item.id, "text": item.text}
            else:
                unreadable.append(item)

    try:
        staged = stage_batch(
            readable(),
            threshold,
            algorithm,
            webhook_url,
            mode=mode,
            expand_identical=expand_identical,
        )
    except InvalidInputError:
        if seen == 0:
            raise InvalidInputError("no input documents found") from None
        if unreadable and seen == len(unreadable):
            staged = None  # nothing readable: every input is a failed item
        else:
            raise
    if staged is not None:
        with progress(staged) as advance:
            if get_settings().embedded:
                raw = _run_in_process(staged, advance, on_pairs)
            else:
                raw = _run_on_cluster(staged, advance, timeout, on_pairs)
        result = BatchResult.model_validate(raw)
    else:
        result = BatchResult(
            batch_id="",
            document_count=0,
            succeeded=0,
            failed=0,
            unique_count=0,
            threshold=threshold,
            algorithm=algorithm,
            items=[],
            pairs=[],
            clusters=[],
        )
    if not unreadable:
        return result
    extra = [
        BatchItemResult(
            position=result.document_count + n,
            id=i.id,
            error=ItemError(type="UnreadableInput", message=i.error or ""),
        )
        for n, i in enumerate(unreadable)
    ]
    return result.model_copy(
        update={
            "document_count": result.document_count + len(extra),
            "failed": result.failed + len(extra),
            "items": [*result.items, *extra],
        }
    )


def _run_in_process(staged: StagedBatch, advance: Advance, on_pairs: PairSink | None) -> Any:
    """The same task code, eagerly; each finished sub-task moves the bar."""

    def on_done(sender: Any = None, retval: Any = None, **_: Any) -> None:
        name = getattr(sender, "name", None)
        if name in names.BATCH_HEADER_TASKS:
            advance(1)
        if on_pairs is not None and name in names.PAIR_TASKS and isinstance(retval, dict):
            on_pairs(retval.get("pairs", []))

    task_postrun.connect(on_done, weak=False)
    try:
        return staged.canvas.apply().get()
    finally:
        task_postrun.disconnect(on_done)


def _run_on_cluster(
    staged: StagedBatch, advance: Advance, timeout: float | None, on_pairs: PairSink | None
) -> Any:
    """Send the canvas, follow the sub-tasks' progress counter (every phase counts into
    it) and hand on pairs as their sub-tasks finish, return the merged result."""
    result = staged.canvas.apply_async()
    store = get_job_store()
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    pending = list(staged.pair_task_ids) if on_pairs is not None else []

    def fetch(final: bool) -> None:
        """Pairs of finished pair sub-tasks (a bounded number per poll unless final)."""
        nonlocal pending
        still: list[str] = []
        for n, task_id in enumerate(pending):
            if not final and n >= FETCH_PER_POLL:
                still += pending[n:]
                break
            sub = AsyncResult(task_id, app=staged.canvas.app)
            if final or sub.ready():
                if on_pairs is not None:
                    on_pairs(sub.get(timeout=timeout, disable_sync_subtasks=False)["pairs"])
            else:
                still.append(task_id)
        pending = still

    while not result.ready():
        fetch(final=False)
        try:
            done = min(store.progress(staged.batch_id), staged.task_count)
        except Exception:  # the bar is a nicety: never fail the batch for it
            done = seen
        if done > seen:
            advance(done - seen)
            seen = done
        if deadline is not None and time.monotonic() > deadline:
            raise BatchRunError(
                f"batch {staged.batch_id} not finished after {timeout} s; it keeps running "
                "on the workers"
            )
        time.sleep(POLL_SECONDS)
    advance(staged.task_count - seen)
    try:
        final = result.get(timeout=timeout)
        fetch(final=True)
        return final
    except Exception as exc:
        raise BatchRunError(f"batch {staged.batch_id} failed: {type(exc).__name__}: {exc}") from exc
