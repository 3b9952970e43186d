"""`crd batch --out`: every search mode writes the same records for the same corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from redundancy.cli import cli

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"


def _records(path: Path) -> dict[str, list[str]]:
    by_kind: dict[str, list[str]] = {"pair": [], "group": [], "item": [], "cluster": []}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        kind = record["record"]
        # compared by ids (positions depend on the staging order)
        if kind == "pair":
            record = {k: record[k] for k in ("id_a", "id_b", "score", "exact")}
        elif kind == "group":
            record = {k: record[k] for k in ("content_hash", "representative", "count", "ids")}
        by_kind[kind].append(json.dumps(record, sort_keys=True))
    return {kind: sorted(lines) for kind, lines in by_kind.items()}


def test_indexed_jsonl_has_the_identical_texts_like_exact(tmp_path):
    # Given a corpus with identical texts: the sample corpus plus three copies of a policy
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    policy = next(iter(sorted((corpus / "policies").glob("*.txt"))))
    for n in range(3):
        shutil.copy(policy, corpus / f"copy-{n}.txt")

    # When the batch runs in exact and in indexed mode, each writing JSONL
    outs = {}
    for mode in ("exact", "indexed"):
        outs[mode] = tmp_path / f"{mode}.jsonl"
        run = CliRunner().invoke(
            cli, ["batch", str(corpus), "--mode", mode, "--out", str(outs[mode])]
        )
        assert run.exit_code == 0, run.output

    # Then both files hold the same pairs, duplicate groups (the copies' among them: one
    # record for the policy and its three copies), items and clusters
    exact, indexed = _records(outs["exact"]), _records(outs["indexed"])
    copies = {f"copy-{n}.txt" for n in range(3)}
    groups = [g for g in map(json.loads, exact["group"]) if copies <= set(g["ids"])]
    assert len(groups) == 1 and groups[0]["count"] == 4
    assert indexed["pair"] == exact["pair"]
    assert indexed["group"] == exact["group"]
    assert indexed["cluster"] == exact["cluster"]
    assert indexed["item"] == exact["item"]


def test_the_progress_display_counts_documents_read_and_analysed(settings_env):
    # Given small chunks (several analysis and search sub-tasks) and a display that records
    from contextlib import contextmanager

    from rich.progress import Progress

    from redundancy.batch.runner import run_batch
    from redundancy.cli.inputs import read_inputs
    from redundancy.cli.output import BatchProgress

    settings_env(BATCH_CHUNK_SIZE="7")
    bar = Progress(disable=True)
    reads: list[int] = []

    class Recording(BatchProgress):
        def read(self, documents: int) -> None:
            reads.append(documents)
            super().read(documents)

    @contextmanager
    def display():
        yield Recording(bar)

    # When a batch of the sample corpus runs with it
    result = run_batch(read_inputs([str(CORPUS)]), threshold=0.8, algorithm="ratio",
                       progress=display, mode="exact")  # fmt: skip

    # Then it counted every document as read, then as analysed, and every search sub-task
    count = result.document_count
    chunks = -(-count // 7)
    rows = {task.description: task for task in bar.tasks}
    assert reads == list(range(1, count + 1))
    assert (rows["read"].completed, rows["read"].total) == (count, count)
    assert (rows["analysed"].completed, rows["analysed"].total) == (count, count)
    search = rows["search (exact)"]
    assert search.completed == search.total == chunks * (chunks + 1) // 2


def test_corpus_matches_in_the_jsonl_items_and_the_csv_rows(tmp_path):
    import csv

    from redundancy.cli.output import write_result
    from redundancy.core import BatchResult
    from redundancy.core.models import BatchItemResult, CorpusMatch, CorpusReport

    # Given a batch result checked against corpus "news": a pair of its own, and matches
    items = [
        BatchItemResult(position=0, id="a", corpus_matches=[CorpusMatch(id="old", score=0.9)]),
        BatchItemResult(position=1, id="b", corpus_matches=[]),
    ]
    report = CorpusReport(
        name="news", threshold=0.8, algorithm="ratio", mode="exact", matched_documents=1,
        matches=1,
    )  # fmt: skip
    result = BatchResult(
        batch_id="x", document_count=2, succeeded=2, failed=0, unique_count=2, threshold=0.8,
        algorithm="ratio", items=items, corpus=report, pairs=[], clusters=[],
    )  # fmt: skip
    # When it is written as JSONL and as CSV
    write_result(result, tmp_path / "r.jsonl", "jsonl")
    write_result(result, tmp_path / "r.csv", "csv")
    # Then each JSONL item carries its matches, and the CSV has a row per match
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r["corpus_matches"] for r in lines if r["record"] == "item"}
    assert by_id == {"a": [{"id": "old", "score": 0.9}], "b": []}
    rows = list(csv.reader((tmp_path / "r.csv").open()))
    assert rows[0][-1] == "corpus" and rows[1:] == [
        ["a", "old", "0.9000", "False", "", "", "", "news"]
    ]
