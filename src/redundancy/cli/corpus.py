"""``crd corpus``: create, fill, query and maintain persistent corpora.

``add`` reads files, folders and JSONL like ``crd batch`` and indexes them in chunks of
``BATCH_CHUNK_SIZE`` with the ``redundancy.corpus.index_documents`` task: in-process on
the embedded default, across the workers on a cluster. Unreadable or invalid inputs are
listed and skipped (exit 3); bad arguments (unknown corpus, a threshold below the
corpus's minimum) exit 2 with one line.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from redundancy.core.corpus import CORPUS_SCORERS, DEFAULT_SHARDS, QUERY_MODES
from redundancy.core.scorers import DEFAULT_ALGORITHM, DEFAULT_THRESHOLD
from redundancy.errors import InvalidInputError

EXIT_USAGE = 2
EXIT_ITEMS_FAILED = 3
IN_FLIGHT_PER_WORKER = 2
"""Chunks sent ahead per worker process (keeps every process busy, memory bounded)."""

err_console = Console(stderr=True)


class _CorpusGroup(click.Group):
    """Bad arguments to a corpus command are usage errors (exit 2), in one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidInputError as exc:
            err_console.print(f"[red]error:[/] {exc}")
            ctx.exit(EXIT_USAGE)


@click.group("corpus", cls=_CorpusGroup)
def corpus_group() -> None:
    """Persistent corpora: each new document checked against everything indexed before."""


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@corpus_group.command("create")
@click.argument("name")
@click.option(
    "--threshold",
    "-t",
    type=float,
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="the corpus's minimum threshold (queries may ask for any higher one)",
)
@click.option(
    "--algorithm",
    "-a",
    type=click.Choice(list(CORPUS_SCORERS)),
    default=DEFAULT_ALGORITHM,
    show_default=True,
)
@click.option(
    "--shards",
    type=click.IntRange(1, 1024),
    default=DEFAULT_SHARDS,
    show_default=True,
    help="index shards (spread over a Redis Cluster)",
)
@click.option(
    "--owner",
    metavar="USER",
    default=None,
    help="the HTTP API user it belongs to (default: none, not reachable over HTTP)",
)
@click.option("--exist-ok", is_flag=True, help="no error if it exists already")
def create(
    name: str, threshold: float, algorithm: str, shards: int, owner: str | None, exist_ok: bool
) -> None:
    """Create corpus NAME."""
    from redundancy.corpus import create_corpus

    corpus = create_corpus(name, threshold, algorithm, shards, owner=owner, exist_ok=exist_ok)
    config = corpus.config
    click.echo(
        f"corpus {config.name}: threshold {config.threshold}, {config.algorithm}, "
        f"{config.shards} shards, {config.params.bands} bands x {config.params.rows} rows, "
        f"{corpus.store.kind} event store"
    )


@corpus_group.command("add")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("--progress/--no-progress", default=None, help="progress bar (default: on a TTY)")
@click.option("--timeout", type=float, default=None, help="seconds to wait for each chunk")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def add(
    name: str, paths: tuple[str, ...], progress: bool | None, timeout: float | None, as_json: bool
) -> None:
    """Index files, folders (recursively) or JSONL (id, text) into corpus NAME.

    A file's id is its path as given (FOLDER/relative/path), a JSONL line's its id; an
    id indexed before is replaced when its text changed and left alone when not.
    """
    from redundancy.config import get_settings
    from redundancy.core.text import validate_text
    from redundancy.corpus import get_corpus

    get_corpus(name)  # an unknown corpus fails before anything is read
    settings = get_settings()
    skipped: list[tuple[str, str]] = []

    def valid() -> Iterator[dict[str, Any]]:
        for item in _inputs(paths):
            if item.error is None:
                try:
                    validate_text(item.text, max_chars=settings.max_text_chars)
                except InvalidInputError as exc:
                    skipped.append((item.id, str(exc)))
                    continue
                yield {"id": item.id, "text": item.text}
            else:
                skipped.append((item.id, item.error))

    show = Console(stderr=True).is_terminal if progress is None else progress
    totals = _index_chunks(name, valid(), settings.batch_chunk_size, show, timeout)
    totals["skipped"] = len(skipped)
    if as_json:
        _print_json({**totals, "skipped_items": [{"id": i, "error": e} for i, e in skipped]})
    else:
        for doc_id, error in skipped:
            err_console.print(f"[yellow]skipped[/] {doc_id}: {error}")
        click.echo(
            f"corpus {name}: {totals['indexed']} indexed, {totals['replaced']} replaced, "
            f"{totals['unchanged']} unchanged, {len(skipped)} skipped"
        )
    if skipped:
        sys.exit(EXIT_ITEMS_FAILED)


def _inputs(paths: tuple[str, ...]) -> Iterator[Any]:
    """Inputs with ids that do not depend on the other paths of the command (a folder's
    files are FOLDER/relative whether it is given alone or with others)."""
    from dataclasses import replace

    from redundancy.cli.inputs import read_inputs

    for raw in paths:
        folder = raw != "-" and Path(raw).is_dir()
        for item in read_inputs([raw]):
            yield replace(item, id=str(Path(raw) / item.id)) if folder else item


def _index_chunks(
    name: str, items: Iterator[dict[str, Any]], size: int, show: bool, timeout: float | None
) -> dict[str, Any]:
    """Send chunks as tasks, a bounded number ahead, and add up their summaries."""
    from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from redundancy.config import get_settings
    from redundancy.tasks import index_documents

    settings = get_settings()
    ahead = IN_FLIGHT_PER_WORKER * max(1, settings.worker_concurrency or 2) * 2
    totals: dict[str, Any] = {"corpus": name, "indexed": 0, "replaced": 0, "unchanged": 0}
    pending: deque[tuple[Any, int]] = deque()
    bar = Progress(
        TextColumn(f"corpus {name}"), MofNCompleteColumn(), TextColumn("documents"),
        TimeElapsedColumn(), console=Console(stderr=True), disable=not show,
    )  # fmt: skip
    task = bar.add_task("add", total=None)

    def collect(result: Any, count: int) -> None:
        summary = result.get(timeout=timeout)
        for key in ("indexed", "replaced", "unchanged"):
            totals[key] += summary[key]
        bar.advance(task, count)

    with bar:
        chunk: list[dict[str, Any]] = []
        for item in items:
            chunk.append(item)
            if len(chunk) == size:
                pending.append((index_documents.delay(name, chunk), len(chunk)))
                chunk = []
                while len(pending) >= ahead:
                    collect(*pending.popleft())
        if chunk:
            pending.append((index_documents.delay(name, chunk), len(chunk)))
        while pending:
            collect(*pending.popleft())
    return totals


@corpus_group.command("query")
@click.argument("name")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option(
    "--threshold",
    "-t",
    type=float,
    default=None,
    help="similarity from the corpus's minimum (default) up to 1",
)
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option(
    "--mode",
    type=click.Choice(list(QUERY_MODES)),
    default="indexed",
    show_default=True,
    help="exact: every match guaranteed (slower)",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def query(
    name: str, file: Any, threshold: float | None, limit: int, mode: str, as_json: bool
) -> None:
    """Documents of corpus NAME similar to FILE (or - for stdin), best first."""
    from redundancy.tasks import find_similar

    text = file.read()
    result = find_similar.delay(name, text, threshold, limit, mode).get()
    if as_json:
        _print_json(result)
        return
    out = Console()
    out.print(
        f"{len(result['matches'])} match(es) in corpus {name} at >= {result['threshold']} "
        f"({mode}; {result['candidates']} checked)"
    )
    for match in result["matches"]:
        out.print(f"{match['score']:.4f}  {match['id']}")


@corpus_group.command("remove")
@click.argument("name")
@click.argument("ids", nargs=-1, required=True)
def remove(name: str, ids: tuple[str, ...]) -> None:
    """Remove documents IDS from corpus NAME."""
    from redundancy.tasks import remove_documents

    summary = remove_documents.delay(name, list(ids)).get()
    click.echo(f"corpus {name}: {summary['removed']} removed, {summary['absent']} not there")


@corpus_group.command("stats")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="every figure, per shard too, as JSON")
def stats(name: str, as_json: bool) -> None:
    """Documents, events, index parameters and projection lag of corpus NAME."""
    from redundancy.corpus import get_corpus

    data = get_corpus(name).stats()
    if as_json:
        _print_json(data)
        return
    lag = data["lagging_shards"]
    click.echo(
        f"corpus {name}: {data['documents']} documents, {data['events']} events "
        f"({data['event_store']} store), threshold {data['threshold']}, {data['algorithm']}, "
        f"{data['shards']} shards, {data['index']['bands']} bands x {data['index']['rows']} "
        f"rows, {data['band_entries']} band entries; "
        + (f"shards behind the store: {lag}" if lag else "index up to date with the store")
    )


@corpus_group.command("jobs")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="every saga as JSON")
@click.option(
    "--compensate",
    "saga_id",
    default=None,
    help="undo saga ID here (resumes a compensation that failed for good)",
)
def jobs(name: str, limit: int, as_json: bool, saga_id: str | None) -> None:
    """Batches added to corpus NAME (sagas), newest first: state, steps, cause, times."""
    from redundancy.corpus import get_corpus
    from redundancy.corpus.saga import Saga, list_sagas

    corpus = get_corpus(name)
    if saga_id is not None:
        saga = Saga(corpus, saga_id)
        if saga.record() is None:
            raise InvalidInputError(f"no saga {saga_id} on corpus {name!r}")
        undone = saga.compensate("compensated by hand", resume=True)
        click.echo(f"saga {saga_id}: {undone.state}")
        return
    sagas = list_sagas(corpus, limit)
    if as_json:
        _print_json([s.model_dump(mode="json") for s in sagas])
        return
    if not sagas:
        click.echo(f"corpus {name}: no batch was added to it (crd batch --corpus {name} --add)")
    for s in sagas:
        cause = f"\t{s.cause}" if s.cause else ""
        click.echo(
            f"{s.saga_id}\t{s.state}\t{s.steps_done}/{s.steps_total} steps\t"
            f"{s.documents} documents\tstarted {s.created_at:%Y-%m-%d %H:%M:%S}\t"
            f"updated {s.updated_at:%Y-%m-%d %H:%M:%S}{cause}"
        )


@corpus_group.command("list")
def list_() -> None:
    """Every corpus with its settings."""
    from redundancy.corpus import list_corpora

    for config in list_corpora():
        click.echo(
            f"{config.name}\tthreshold {config.threshold}\t{config.algorithm}\t"
            f"{config.shards} shards\tcreated {config.created_at:%Y-%m-%d %H:%M}"
            + (f"\towner {config.owner}" if config.owner else "")
        )


@corpus_group.command("drop")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask")
def drop(name: str, yes: bool) -> None:
    """Delete corpus NAME: its index, its event store and its settings."""
    from redundancy.corpus import get_corpus

    corpus = get_corpus(name)
    if not yes:
        click.confirm(f"delete corpus {name} and its event store for good?", abort=True)
    corpus.drop()
    click.echo(f"corpus {name} dropped")


@corpus_group.command("rebuild")
@click.argument("name")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: on a TTY)")
@click.option("--processes", "-p", type=click.IntRange(1, 64), default=None,
              help="shards rebuilt at once (default: CPUs)")  # fmt: skip
def rebuild(name: str, progress: bool | None, processes: int | None) -> None:
    """Replay NAME's event store into a fresh index and swap it in (resumes if stopped)."""
    import time

    from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from redundancy.corpus import get_corpus

    corpus = get_corpus(name)
    started = time.perf_counter()
    show = Console(stderr=True).is_terminal if progress is None else progress
    bar = Progress(
        TextColumn(f"rebuild {name}"), MofNCompleteColumn(), TextColumn("events"),
        TimeElapsedColumn(), console=Console(stderr=True), disable=not show,
    )  # fmt: skip
    with bar:
        task = bar.add_task("replay", total=corpus.stats()["events"])
        corpus.rebuild(
            on_step=lambda n: bar.advance(task, n), processes=processes or os.cpu_count() or 1
        )
    data = corpus.stats()
    click.echo(
        f"corpus {name} rebuilt from {data['events']} events: {data['documents']} documents "
        f"in {time.perf_counter() - started:.1f} s"
    )


@corpus_group.command("export")
@click.argument("name")
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSONL file (default: stdout)",
)
def export(name: str, out: Path | None) -> None:  # fmt: skip
    """The live documents of NAME as JSONL (id, text as given), replayed from its store."""
    from redundancy.corpus import get_corpus

    corpus = get_corpus(name)
    sink = out.open("w", encoding="utf-8") if out else sys.stdout
    try:
        count = 0
        for doc in corpus.export():
            sink.write(json.dumps(doc, ensure_ascii=False) + "\n")
            count += 1
    finally:
        if out:
            sink.close()
    if out:
        click.echo(f"wrote {count} documents to {out}")
