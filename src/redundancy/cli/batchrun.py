"""Running a batch from the CLI: in-process (embedded default) or on the Celery cluster,
with a progress bar fed by sub-task completions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from redundancy.cli.inputs import InputItem
from redundancy.config import get_settings
from redundancy.core import BatchItemResult, BatchResult, ItemError
from redundancy.errors import InvalidInputError

POLL_SECONDS = 0.5
HEADER_TASKS = ("redundancy.batch.analyze_chunk", "redundancy.batch.pair_shard")


def run_batch(
    inputs: list[InputItem],
    *,
    threshold: float,
    algorithm: str,
    webhook_url: str | None = None,
    show_progress: bool = False,
    timeout: float | None = None,
) -> BatchResult:
    """Stage readable inputs, run the batch, and add unreadable inputs as failed items."""
    from redundancy.tasks import stage_batch

    if not inputs:
        raise InvalidInputError("no input documents found")
    readable = [i for i in inputs if i.error is None]
    unreadable = [i for i in inputs if i.error is not None]
    if readable:
        staged = stage_batch(
            [{"id": i.id, "text": i.text} for i in readable], threshold, algorithm, webhook_url
        )
        raw = _execute(staged, show_progress, timeout)
        result = BatchResult.model_validate(raw)
    else:
        result = BatchResult(batch_id="", document_count=0, succeeded=0, failed=0, unique_count=0,
                             threshold=threshold, algorithm=algorithm, items=[], pairs=[], clusters=[])
    if not unreadable:
        return result
    extra = [
        BatchItemResult(position=result.document_count + n, id=i.id,
                        error=ItemError(type="UnreadableInput", message=i.error or ""))
        for n, i in enumerate(unreadable)
    ]
    return result.model_copy(update={
        "document_count": result.document_count + len(extra),
        "failed": result.failed + len(extra),
        "items": [*result.items, *extra],
    })


def _execute(staged: Any, show_progress: bool, timeout: float | None) -> Any:
    with _progress(staged.task_count, show_progress) as advance:
        if get_settings().embedded:
            return _run_in_process(staged, advance)
        return _run_on_cluster(staged, advance, timeout)


def _run_in_process(staged: Any, advance: Callable[[int], None]) -> Any:
    """The same task code, eagerly; each finished sub-task moves the bar."""
    from celery.signals import task_postrun

    def on_done(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "name", None) in HEADER_TASKS:
            advance(1)

    task_postrun.connect(on_done, weak=False)
    try:
        return staged.canvas.apply().get()
    finally:
        task_postrun.disconnect(on_done)


def _run_on_cluster(staged: Any, advance: Callable[[int], None], timeout: float | None) -> Any:
    """Send the chord, follow the header's completed count, return the merged result."""
    result = staged.canvas.apply_async()
    header = result.parent
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    while not result.ready():
        done = header.completed_count() if header is not None else 0
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
        return result.get(timeout=timeout)
    except Exception as exc:
        raise click.ClickException(
            f"batch {staged.batch_id} failed: {type(exc).__name__}: {exc}"
        ) from exc


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _n: None
        return
    columns = (TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(),
               TextColumn("sub-tasks"), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("batch", total=total)
        yield lambda n: bar.advance(task, n)
