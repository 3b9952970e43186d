"""A producer's side of a batch (what ``crd batch`` runs): stage inputs as they are read,
run the canvas in-process (embedded default) or on the Celery cluster, follow its
progress, hand on pairs as their sub-tasks finish, and report the webhook's outcome.

Interrupted on a cluster (Ctrl+C), it revokes the batch's tasks or leaves them running,
as the caller chose, and says which batch it was (``JobInterruptedError``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, Protocol

from celery.result import AsyncResult, ResultSet
from celery.signals import task_postrun

from redundancy import names
from redundancy.batch.canvas import StagedBatch, stage_batch
from redundancy.batch.corpus import (
    DEFAULT_CORPUS_LIMIT,
    check_corpus_options,
    saga_view,
    wait_saga,
)
from redundancy.batch.store import get_job_store
from redundancy.batch.webhooks import delivery_task_id
from redundancy.config import Settings, get_settings
from redundancy.core import BatchItemResult, BatchResult, ItemError
from redundancy.errors import InvalidInputError, JobInterruptedError, RedundancyError
from redundancy.retry import webhook_retry
from redundancy.schemas import BatchOptions, validate

POLL_SECONDS = 0.5
FETCH_PER_POLL = 256
"""Pair sub-task results a cluster poll reads at most (keeps each poll cheap)."""

OnInterrupt = Literal["revoke", "leave"]
ON_INTERRUPT: tuple[OnInterrupt, ...] = ("revoke", "leave")

PairSink = Callable[[list[list[Any]]], None]
"""Receives ``[position a, position b, score 0..100]`` lists as sub-tasks find them."""


class BatchRunError(RedundancyError):
    """A batch failed, or did not finish within the caller's timeout."""


class Progress(Protocol):
    """What a progress display is told, as totals so far."""

    def read(self, documents: int) -> None:
        """Inputs read (and staged) so far."""

    def start(self, staged: StagedBatch) -> None:
        """Reading is done; the batch's sub-tasks are about to run."""

    def update(self, searches: int, documents: int) -> None:
        """Search sub-tasks finished and documents analysed so far."""


class _Silent:
    def read(self, documents: int) -> None:
        pass

    def start(self, staged: StagedBatch) -> None:
        pass

    def update(self, searches: int, documents: int) -> None:
        pass


ProgressDisplay = Callable[[], AbstractContextManager[Progress]]


def no_progress() -> AbstractContextManager[Progress]:
    return nullcontext(_Silent())


class Input(Protocol):
    """One input read by the producer: ``error`` says why it could not be read."""

    @property
    def id(self) -> str: ...
    @property
    def text(self) -> Any: ...
    @property
    def error(self) -> str | None: ...


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
    on_webhook: Callable[[dict[str, Any]], None] | None = None,
    on_interrupt: OnInterrupt = "revoke",
    expand_identical: bool = False,
    corpus: str | None = None,
    add: bool = False,
    corpus_mode: str = "indexed",
    corpus_limit: int = DEFAULT_CORPUS_LIMIT,
) -> BatchResult:
    """Stage readable inputs as they are read, run the batch, and add unreadable inputs as
    failed items (only those are kept in memory here).

    ``on_document(id, text)`` sees each staged document in order (its position);
    ``on_pairs`` receives each pair sub-task's pairs as soon as it finishes (between the
    sub-task's first copies of each text; the result moves them onto representatives);
    ``on_webhook`` the webhook's delivery report (delivered, failed or refused).
    ``corpus``, ``add``, ...: see ``stage_batch``; with ``add``, an unreadable input
    refuses the whole batch, and on a cluster the result waits for the saga's end.
    """
    # Options first: a bad one is the caller's error, not "no input documents".
    validate(BatchOptions, threshold=threshold, algorithm=algorithm,
             webhook_url=webhook_url, mode=mode, expand_identical=expand_identical)  # fmt: skip
    if corpus is not None:
        check_corpus_options(corpus, threshold, corpus_mode, corpus_limit)
    unreadable: list[Input] = []
    seen = 0
    with progress() as shown:

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
                shown.read(seen)

        try:
            staged = stage_batch(
                readable(),
                threshold,
                algorithm,
                webhook_url,
                mode=mode,
                expand_identical=expand_identical,
                corpus=corpus,
                add=add,
                corpus_mode=corpus_mode,
                corpus_limit=corpus_limit,
            )
        except KeyboardInterrupt:
            raise JobInterruptedError("interrupted while reading inputs: nothing sent") from None
        except InvalidInputError:
            if seen == 0:
                raise InvalidInputError("no input documents found") from None
            if unreadable and seen == len(unreadable):
                staged = None  # nothing readable: every input is a failed item
            else:
                raise
        if staged is not None and add and unreadable:
            get_job_store().delete(staged.batch_id)
            raise InvalidInputError(
                f"{len(unreadable)} inputs could not be read (first: {unreadable[0].id}: "
                f"{unreadable[0].error}); nothing was added to corpus {corpus!r}"
            )
        if staged is not None:
            shown.start(staged)
            if get_settings().embedded:
                raw = _run_in_process(staged, shown, on_pairs, on_webhook)
            else:
                raw = _run_on_cluster(staged, shown, timeout, on_pairs, on_interrupt)
                if webhook_url and on_webhook is not None:
                    on_webhook(_webhook_report(staged, timeout))
    if staged is not None and add and corpus is not None and not get_settings().embedded:
        raw = _with_saga_end(raw, corpus, timeout)
    result = (
        BatchResult.model_validate(raw)
        if staged is not None
        else BatchResult(
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


def _with_saga_end(raw: Any, corpus: str, timeout: float | None) -> Any:
    """The result with its saga as it ended, on a cluster (the embedded default ran it
    before the result came back)."""
    saga = (raw.get("corpus") or {}).get("saga") if isinstance(raw, dict) else None
    if not saga or saga["state"] not in ("running", "compensating"):
        return raw
    record = wait_saga(corpus, saga["saga_id"], timeout)
    report = {**raw["corpus"], "saga": saga_view(record).model_dump(mode="json")}
    return {**raw, "corpus": report}


def _run_in_process(
    staged: StagedBatch,
    shown: Progress,
    on_pairs: PairSink | None,
    on_webhook: Callable[[dict[str, Any]], None] | None,
) -> Any:
    """The same task code, eagerly; each finished sub-task moves the display."""
    searches = documents = 0

    def on_done(sender: Any = None, retval: Any = None, **_: Any) -> None:
        nonlocal searches, documents
        name = getattr(sender, "name", None)
        if name == names.BATCH_ANALYZE_CHUNK and isinstance(retval, dict):
            documents += len(retval.get("items", []))
            shown.update(searches, documents)
        elif name in names.BATCH_HEADER_TASKS:
            searches += 1
            shown.update(searches, documents)
        if on_pairs is not None and name in names.PAIR_TASKS and isinstance(retval, dict):
            on_pairs(retval.get("pairs", []))
        if on_webhook is not None and name == names.WEBHOOK_DELIVER and isinstance(retval, dict):
            on_webhook(retval)

    task_postrun.connect(on_done, weak=False)
    try:
        return staged.canvas.apply().get()
    except KeyboardInterrupt:
        raise JobInterruptedError(f"batch {staged.batch_id} interrupted (in-process)") from None
    finally:
        task_postrun.disconnect(on_done)


def _run_on_cluster(
    staged: StagedBatch,
    shown: Progress,
    timeout: float | None,
    on_pairs: PairSink | None,
    on_interrupt: OnInterrupt,
) -> Any:
    """Send the canvas, follow the sub-tasks' progress counters and hand on pairs as
    their sub-tasks finish; return the merged result."""
    result: AsyncResult | None = None
    try:
        with _deferred_interrupt():  # a half-sent canvas could never finish
            result = staged.canvas.apply_async()
        return _follow(staged, result, shown, timeout, on_pairs)
    except KeyboardInterrupt:
        raise JobInterruptedError(_interrupted(staged, on_interrupt)) from None
    finally:
        release(result)


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold a first Ctrl+C until the block is done (a second one interrupts at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, _frame: Any) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _follow(
    staged: StagedBatch,
    result: AsyncResult,
    shown: Progress,
    timeout: float | None,
    on_pairs: PairSink | None,
) -> Any:
    store = get_job_store()
    deadline = None if timeout is None else time.monotonic() + timeout
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
            try:
                if final or sub.ready():
                    if on_pairs is not None:
                        on_pairs(sub.get(timeout=timeout, disable_sync_subtasks=False)["pairs"])
                else:
                    still.append(task_id)
            finally:
                release(sub)
        pending = still

    while not result.ready():
        fetch(final=False)
        with contextlib.suppress(Exception):  # the display is a nicety: never fail for it
            shown.update(*store.progress(staged.batch_id))
        if deadline is not None and time.monotonic() > deadline:
            raise BatchRunError(
                f"batch {staged.batch_id} not finished after {timeout} s; it keeps running "
                "on the workers"
            )
        time.sleep(POLL_SECONDS)
    shown.update(staged.task_count - staged.analysis_tasks, staged.count)
    try:
        final = result.get(timeout=timeout)
        fetch(final=True)
        return final
    except Exception as exc:
        raise BatchRunError(f"batch {staged.batch_id} failed: {type(exc).__name__}: {exc}") from exc


def task_ids(canvas: Any) -> list[str]:
    """Every task id of a frozen canvas (chains, groups and chords walked), the batch's
    merge last; known before anything is sent, so a send cut short can be revoked."""
    ids: list[str] = []
    stack = [canvas]
    while stack:
        node = stack.pop()
        for attribute in ("body", "tasks"):
            part = getattr(node, attribute, None)
            if part is not None:
                stack.extend(part if isinstance(part, list | tuple) else [part])
        task_id = node.options.get("task_id") if hasattr(node, "options") else None
        if task_id:
            ids.append(str(task_id))
    return list(dict.fromkeys(ids))


def _interrupted(staged: StagedBatch, on_interrupt: OnInterrupt) -> str:
    """Revoke the batch's tasks (queued ones are dropped, running ones finish, the merge
    never runs) or leave them; say which batch it was either way."""
    if on_interrupt == "leave":
        return (
            f"interrupted: batch {staged.batch_id} keeps running on the workers; its result "
            f"will be under that id (celery -A redundancy.workers result {staged.batch_id})"
        )
    ids = task_ids(staged.canvas)
    staged.canvas.app.control.revoke(ids)
    return (
        f"interrupted: batch {staged.batch_id} revoked ({len(ids)} tasks; running ones "
        "finish, the rest are dropped)"
    )


def release(result: Any) -> None:
    """Stop waiting on a result now, while the interpreter runs: Celery's asynchronous
    result backends keep every result they waited on until the object is deleted, and
    deleting it unsubscribes over the network -- at interpreter exit that fails with an
    ``Exception ignored in: AsyncResult.__del__`` traceback on stderr."""
    for node in [result, *_ancestors(result)]:
        with contextlib.suppress(Exception):
            node.backend.remove_pending_result(node)


def _ancestors(result: Any) -> Iterator[Any]:
    node = getattr(result, "parent", None)
    while node is not None:
        if isinstance(node, ResultSet):
            yield from node.results
        else:
            yield node
        node = getattr(node, "parent", None)


def release_all(app: Any) -> None:
    """Release every result the app's backend still waits on (see ``release``)."""
    pending = getattr(app.backend, "_pending_results", None) or ()
    for mapping in pending:
        for waiters in list(mapping.values()):
            values = waiters.values() if isinstance(waiters, dict) else [waiters]
            for result in list(values):
                release(result)


def webhook_wait(settings: Settings) -> float:
    """Longest a webhook's delivery may take: every attempt's timeout and back-off."""
    retry = webhook_retry(settings)
    attempts = settings.webhook_max_attempts
    backoff = sum(retry.delay(n) for n in range(1, attempts))
    return attempts * settings.webhook_timeout + backoff + 30.0


def _webhook_report(staged: StagedBatch, timeout: float | None) -> dict[str, Any]:
    """The delivery task's report (it always returns one: delivered, failed or refused)."""
    sub = AsyncResult(delivery_task_id(staged.batch_id), app=staged.canvas.app)
    try:
        report = sub.get(timeout=timeout or webhook_wait(get_settings()), propagate=False)
    except Exception as exc:
        return {"status": "unknown", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        release(sub)
    if isinstance(report, dict):
        return report
    return {"status": "failed", "error": f"{type(report).__name__}: {report}"}
