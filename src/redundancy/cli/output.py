"""Writing a batch result: JSONL records or a CSV of pairs, and the terminal summary."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from redundancy.config import get_settings
from redundancy.core import BatchResult
from redundancy.core.models import DocumentPair
from redundancy.core.neardup import valid_documents

if TYPE_CHECKING:
    from redundancy.batch.canvas import StagedBatch

SEARCH_NOTES = {
    "all-pairs": "all-pairs (every pair scored)",
    "exact": "exact (every pair found: pruned with proven bounds)",
    "indexed": "indexed (MinHash LSH: every pair shown is exact; recall is estimated, "
    ">= 0.99 measured)",
}


def output_format(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def write_result(result: BatchResult, path: Path, fmt: str) -> None:
    """``jsonl``: one record per item, pair, duplicate group and cluster (``record`` tells
    which); with a corpus, each item's ``corpus_matches``. ``csv``: one row per
    near-duplicate pair with its cluster number, then one row per copy of an identical
    text, paired with its group's representative (k - 1 rows for k copies, not k(k-1)/2;
    none when the pairs are already expanded); with a corpus, a ``corpus`` column and one
    row per match in it (batch document, corpus document, score)."""
    cluster_of = _cluster_of(result)
    with path.open("w", encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS + (("corpus",) if result.corpus else ()))
            tail = [""] if result.corpus else []  # batch rows: no corpus
            for p in result.pairs:
                cluster = cluster_of[p.id_a]
                score = f"{p.score:.4f}"
                row = [p.id_a, p.id_b, score, p.exact, cluster, p.copies_a, p.copies_b]
                writer.writerow([*row, *tail])
            if not result.expanded:
                for g in result.duplicate_groups:
                    for member in g.ids[1:]:
                        row = [g.representative, member, "1.0000", True, cluster_of[member]]
                        writer.writerow([*row, g.count, g.count, *tail])
            if result.corpus:
                for item in result.items:
                    for m in item.corpus_matches or []:
                        row = [item.id, m.id, f"{m.score:.4f}", m.score >= 1.0, "", "", ""]
                        writer.writerow([*row, result.corpus.name])
            return
        _item_lines(fh, result, cluster_of)
        for p in result.pairs:
            _line(fh, {"record": "pair", **p.model_dump(mode="json")})
        _group_lines(fh, result, cluster_of)
        _cluster_lines(fh, result)


CSV_COLUMNS = ("id_a", "id_b", "score", "exact", "cluster", "copies_a", "copies_b")


class JsonlStream:
    """``--out`` JSONL written while the batch runs: each pair as soon as the sub-task that
    found it finishes (so a huge batch's pairs can be read with ``tail -f``), then every
    pair only the merge knows (expanded copies), duplicate group, item and cluster when
    the batch is done. Pairs come in completion order.

    Sub-tasks report pairs between their own first copies of each text; the stream moves
    them onto the batch's representatives (the first document of each text, known here
    because every document is staged before any sub-task runs) and writes each once, so
    the file holds exactly the result's pairs.
    """

    def __init__(self, path: Path) -> None:
        self._fh = path.open("w", encoding="utf-8")
        self._ids: list[str] = []
        self._first: dict[str, int] = {}
        self._representative: list[int] = []
        self._copies: Counter[int] = Counter()
        self._written: set[tuple[int, int]] = set()

    def document(self, doc_id: str, text: Any) -> None:
        """Called for each staged document in order: its position is its index here."""
        position = len(self._ids)
        self._ids.append(doc_id)
        digest = comparable_hash(text)
        rep = position if digest is None else self._first.setdefault(digest, position)
        self._representative.append(rep)
        self._copies[rep] += 1

    def pairs(self, found: list[list[Any]]) -> None:
        rep = self._representative
        for a, b, score in found:
            x, y = sorted((rep[a], rep[b]))
            if x == y or (x, y) in self._written:
                continue
            self._write_pair(
                DocumentPair(
                    a=x,
                    b=y,
                    id_a=self._ids[x],
                    id_b=self._ids[y],
                    score=score / 100.0,
                    exact=False,
                    copies_a=self._copies[x],
                    copies_b=self._copies[y],
                )
            )
        self._fh.flush()

    def finish(self, result: BatchResult) -> None:
        for pair in result.pairs:
            if (pair.a, pair.b) not in self._written:
                self._write_pair(pair)
        cluster_of = _cluster_of(result)
        _group_lines(self._fh, result, cluster_of)
        _item_lines(self._fh, result, cluster_of)
        _cluster_lines(self._fh, result)
        self.close()

    def close(self) -> None:
        self._fh.close()

    def _write_pair(self, pair: DocumentPair) -> None:
        self._written.add((pair.a, pair.b))
        _line(self._fh, {"record": "pair", **pair.model_dump(mode="json")})


def comparable_hash(text: Any) -> str | None:
    """Content hash of a text the workers will compare, else None (never paired)."""
    docs = valid_documents([(0, text)], max_chars=get_settings().max_text_chars)
    return docs[0].content_hash if docs else None


def _cluster_of(result: BatchResult) -> dict[str, int]:
    return {doc: n for n, ids in enumerate(result.clusters) for doc in ids}


def _item_lines(fh: Any, result: BatchResult, cluster_of: dict[str, int]) -> None:
    for item in result.items:
        _line(
            fh,
            {"record": "item", "cluster": cluster_of.get(item.id), **item.model_dump(mode="json")},
        )


def _group_lines(fh: Any, result: BatchResult, cluster_of: dict[str, int]) -> None:
    for group in result.duplicate_groups:
        record = {"record": "group", "cluster": cluster_of.get(group.representative)}
        _line(fh, {**record, **group.model_dump(mode="json")})


def _cluster_lines(fh: Any, result: BatchResult) -> None:
    for n, ids in enumerate(result.clusters):
        _line(fh, {"record": "cluster", "cluster": n, "size": len(ids), "ids": ids})


def _line(fh: Any, record: dict[str, Any]) -> None:
    fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def print_summary(console: Console, result: BatchResult, *, mode: str, seconds: float) -> None:
    """A readable report: totals, the largest clusters, the most redundant items, failures."""
    scores = [i.analysis.redundancy_score for i in result.items if i.analysis]
    totals = Table.grid(padding=(0, 2))
    totals.add_row("documents", f"{result.document_count:,}")
    totals.add_row("analysed", f"{result.succeeded:,}")
    totals.add_row("failed", f"[red]{result.failed:,}[/]" if result.failed else "0")
    totals.add_row("distinct texts", f"{result.unique_count:,}")
    groups = result.duplicate_groups
    if groups:
        copies = sum(g.count for g in groups)
        totals.add_row("identical texts", f"{len(groups):,} groups of {copies:,} documents")
    label = f"near-duplicate pairs (>= {result.threshold:g}, {result.algorithm})"
    if result.expanded:
        exact = sum(1 for p in result.pairs if p.exact)
        totals.add_row(label, f"{len(result.pairs):,} document pairs ({exact:,} exact)")
    else:
        totals.add_row(label, f"{len(result.pairs):,} between distinct texts")
    if groups or result.expanded:
        totals.add_row("document pairs in all", f"{result.document_pair_count:,}")
    totals.add_row("clusters", f"{len(result.clusters):,}")
    totals.add_row("search", SEARCH_NOTES.get(result.mode, result.mode))
    if scores:
        totals.add_row("mean redundancy score", f"{sum(scores) / len(scores):.3f}")
    totals.add_row("ran on", mode)
    totals.add_row("time", f"{seconds:.2f} s")
    console.print(totals)
    if result.expansion_cut:
        console.print(f"[yellow]{result.expansion_cut}[/]")
    if result.corpus is not None:
        _corpus_summary(console, result)

    if result.clusters:
        table = Table(title="Largest near-duplicate clusters", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("size", justify="right")
        table.add_column("members")
        ranked = sorted(enumerate(result.clusters), key=lambda c: (-len(c[1]), c[0]))
        for n, ids in ranked[:10]:
            shown = ", ".join(ids[:4]) + (f", ... (+{len(ids) - 4})" if len(ids) > 4 else "")
            table.add_row(str(n), str(len(ids)), shown)
        console.print(table)

    redundant = sorted(
        (i for i in result.items if i.analysis and i.analysis.redundancy_score > 0),
        key=lambda i: -i.analysis.redundancy_score,  # type: ignore[union-attr]
    )
    if redundant:
        table = Table(title="Most self-redundant documents", title_justify="left")
        table.add_column("id")
        table.add_column("redundancy", justify="right")
        table.add_column("level")
        table.add_column("repeated sentences", justify="right")
        for item in redundant[:10]:
            a = item.analysis
            assert a is not None
            table.add_row(
                item.id,
                f"{a.redundancy_score:.3f}",
                a.redundancy_level,
                f"{a.redundant_sentence_count}/{a.sentence_count}",
            )
        console.print(table)

    failed = result.failed_items
    if failed:
        table = Table(title="Failed items", title_justify="left", style="red")
        table.add_column("id")
        table.add_column("error")
        for item in failed[:50]:
            assert item.error is not None
            table.add_row(item.id, f"{item.error.type}: {item.error.message}")
        if len(failed) > 50:
            table.add_row("...", f"{len(failed) - 50} more in --out")
        console.print(table)


def _corpus_summary(console: Console, result: BatchResult) -> None:
    """Matches in the corpus, best first, and what became of adding the batch."""
    report = result.corpus
    assert report is not None
    console.print(
        f"corpus {report.name}: {report.matched_documents:,} documents match its earlier "
        f"content ({report.matches:,} matches >= {report.threshold:g}, {report.algorithm}, "
        f"{report.mode})"
    )
    saga = report.saga
    if saga is not None:
        what = {
            "completed": f"added ({saga.added:,} new, {saga.replaced:,} replaced)",
            "compensated": "not added: undone, the corpus is as before",
            "failed": "not added: nothing changed",
        }.get(saga.state, saga.state)
        cause = f" ({saga.cause})" if saga.cause else ""
        console.print(f"saga {saga.saga_id}: {what}{cause}", soft_wrap=True)
    found = [(i.id, m) for i in result.items for m in i.corpus_matches or []]
    if found:
        table = Table(title=f"Best matches in corpus {report.name}", title_justify="left")
        table.add_column("document")
        table.add_column("corpus document")
        table.add_column("score", justify="right")
        for doc_id, match in sorted(found, key=lambda f: -f[1].score)[:10]:
            table.add_row(doc_id, match.id, f"{match.score:.3f}")
        console.print(table)


class _Count(ProgressColumn):
    """``done/total unit`` (``done unit`` while the total is unknown)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if task.total is None:
            return Text(f"{int(task.completed):,} {unit}")
        return Text(f"{int(task.completed):,}/{int(task.total):,} {unit}")


class _Rate(ProgressColumn):
    """Items per second over rich's recent samples."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s")


class BatchProgress:
    """A batch on the terminal, in documents: read (and staged), then analysed, with the
    pair search's sub-tasks beside; each row with its rate and time left."""

    def __init__(self, bar: Progress) -> None:
        self._bar = bar
        self._read = bar.add_task("read", total=None, unit="documents")
        self._analysed: TaskID | None = None
        self._search: TaskID | None = None

    def read(self, documents: int) -> None:
        self._bar.update(self._read, completed=documents)

    def start(self, staged: StagedBatch) -> None:
        read = self._bar.tasks[self._read].completed
        self._bar.update(self._read, total=read, completed=read)
        self._analysed = self._bar.add_task("analysed", total=staged.count, unit="documents")
        searches = staged.task_count - staged.analysis_tasks
        if searches > 0:
            description = f"search ({staged.mode})"
            self._search = self._bar.add_task(description, total=searches, unit="sub-tasks")

    def update(self, searches: int, documents: int) -> None:
        if self._analysed is not None:
            self._bar.update(self._analysed, completed=documents)
        if self._search is not None:
            self._bar.update(self._search, completed=searches)


@contextmanager
def progress_bar() -> Iterator[BatchProgress]:
    """A transient display of a batch (see ``BatchProgress``), on stderr."""
    columns = (
        TextColumn("[bold]{task.description:<16}"),
        BarColumn(),
        _Count(),
        _Rate(),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        yield BatchProgress(bar)
