"""Running a batch from the CLI: in-process (embedded default) or on the Celery cluster,
with a progress bar fed by sub-task completions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from redundancy.cli.inputs import InputItem
from redundancy.config import get_settings
from redundancy.core import BatchItemResult, BatchResult, ItemError
from redundancy.errors import InvalidInputError
from redundancy.workers import routing as names

POLL_SECONDS = 0.5
HEADER_TASKS = names.BATCH_HEADER_TASKS
PAIR_TASKS = names.PAIR_TASKS
FETCH_PER_POLL = 256
"""Pair sub-task results a cluster poll reads at most (keeps each poll cheap)."""

PairSink = Callable[[list[list[Any]]], None]
"""Receives ``[position a, position b, score 0..100]`` lists as sub-tasks find them."""


def run_batch(
    inputs: Iterable[InputItem],
    *,
    threshold: float,
    algorithm: str,
    webhook_url: str | None = None,
    show_progress: bool = False,
    timeout: float | None = None,
    mode: str = "auto",
    on_pairs: PairSink | None = None,
    on_document: Callable[[str, Any], None] | None = None,
) -> BatchResult:
    """Stage readable inputs as they are read, run the batch, and add unreadable inputs as
    failed items (only those are kept in memory here).

    ``on_document(id, text)`` sees each staged document in order (its position);
    ``on_pairs`` receives each pair sub-task's pairs as soon as it finishes.
    """
    from redundancy.tasks import stage_batch

    unreadable: list[InputItem] = []
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
        staged = stage_batch(readable(), threshold, algorithm, webhook_url, mode=mode)
    except InvalidInputError:
        if seen == 0:
            raise InvalidInputError("no input documents found") from None
        if unreadable and seen == len(unreadable):
            staged = None  # nothing readable: every input is a failed item
        else:
            raise
    if staged is not None:
        raw = _execute(staged, show_progress, timeout, on_pairs)
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


def _execute(
    staged: Any, show_progress: bool, timeout: float | None, on_pairs: PairSink | None = None
) -> Any:
    with _progress(staged.task_count, show_progress, staged.mode) as advance:
        if get_settings().embedded:
            return _run_in_process(staged, advance, on_pairs)
        return _run_on_cluster(staged, advance, timeout, on_pairs)


def _run_in_process(
    staged: Any, advance: Callable[[int], None], on_pairs: PairSink | None = None
) -> Any:
    """The same task code, eagerly; each finished sub-task moves the bar."""
    from celery.signals import task_postrun

    def on_done(sender: Any = None, retval: Any = None, state: Any = None, **_: Any) -> None:
        name = getattr(sender, "name", None)
        if name in HEADER_TASKS:
            advance(1)
        if on_pairs is not None and name in PAIR_TASKS and isinstance(retval, dict):
            on_pairs(retval.get("pairs", []))

    task_postrun.connect(on_done, weak=False)
    try:
        return staged.canvas.apply().get()
    finally:
        task_postrun.disconnect(on_done)


def _run_on_cluster(
    staged: Any,
    advance: Callable[[int], None],
    timeout: float | None,
    on_pairs: PairSink | None = None,
) -> Any:
    """Send the canvas, follow the sub-tasks' progress counter (every phase counts into
    it) and hand on pairs as their sub-tasks finish, return the merged result."""
    from celery.result import AsyncResult

    from redundancy.batch.store import get_job_store

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
            raise click.ClickException(
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
        raise click.ClickException(
            f"batch {staged.batch_id} failed: {type(exc).__name__}: {exc}"
        ) from exc


@contextmanager
def _progress(total: int, enabled: bool, mode: str = "") -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _n: None
        return
    label = f"[bold]batch ({mode})" if mode else "[bold]batch"
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("sub-tasks"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("batch", total=total)
        yield lambda n: bar.advance(task, n)
