"""Batches in every search mode on the embedded default: streaming in, pairs out as found."""

from __future__ import annotations

import json

import pytest
from benchmarks.corpora import synthetic_corpus
from celery.signals import task_prerun
from click.testing import CliRunner

from redundancy.batch.store import get_job_store
from redundancy.cli import cli
from redundancy.core import near_duplicates
from redundancy.errors import InvalidInputError
from redundancy.tasks import process_batch, stage_batch
from redundancy.workers.routing import BATCH_MERGE


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus(400, seed=5, copy_share=0.2)


@pytest.mark.parametrize("mode", ["exact", "indexed", "all-pairs"])
def test_process_batch_runs_the_requested_mode(corpus, mode):
    items = [{"id": i, "text": t} for i, t in zip(corpus.ids, corpus.texts, strict=True)]
    result = process_batch.apply(args=(items, 0.8), kwargs={"mode": mode}).get()
    expected = near_duplicates(corpus.texts, 0.8, ids=corpus.ids, mode=mode)
    assert result["mode"] == mode
    assert [(p["a"], p["b"], p["score"]) for p in result["pairs"]] == [
        (p.a, p.b, p.score) for p in expected.pairs
    ]
    assert len(expected.pairs) > 20


def test_stage_batch_consumes_a_stream_and_drops_it_on_a_duplicate_id():
    # (the in-memory store reads the whole stream before writing; the clean-up of
    # documents already written is checked on Redis, tests/integration/test_batch_staging.py)
    handed_out = 0

    def items():
        nonlocal handed_out
        for item in (
            {"id": "a", "text": "one text"},
            {"id": "b", "text": "another text"},
            {"id": "a", "text": "the same id again"},
            {"id": "c", "text": "never read"},
        ):
            handed_out += 1
            yield item

    with pytest.raises(InvalidInputError, match="duplicate item id 'a'"):
        stage_batch(items(), batch_id="dup-stream")
    assert handed_out == 3  # read as a stream: nothing after the duplicate was pulled
    assert get_job_store().load("dup-stream", [0, 1]) == [None, None]


def test_stage_batch_rejects_an_unknown_mode():
    with pytest.raises(InvalidInputError, match="mode"):
        stage_batch(["a text"], mode="fastest")


def test_crd_batch_writes_pairs_as_found_then_items_and_clusters(corpus, tmp_path):
    # Given a JSONL corpus
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": i, "text": t}) + "\n"
            for i, t in zip(corpus.ids, corpus.texts, strict=True)
        )
    )
    out = tmp_path / "out.jsonl"
    # (pair lines already in the file when the merge, the batch's last step, starts)
    pairs_before_merge: list[int] = []

    def before_merge(sender=None, **_):
        if getattr(sender, "name", None) == BATCH_MERGE:
            lines = out.read_text().splitlines() if out.exists() else []
            pairs_before_merge.append(sum(json.loads(x)["record"] == "pair" for x in lines))

    task_prerun.connect(before_merge, weak=False)
    # When crd batch runs it in indexed mode with --out
    try:
        run = CliRunner().invoke(
            cli, ["batch", str(source), "--mode", "indexed", "--json", "--out", str(out)]
        )
    finally:
        task_prerun.disconnect(before_merge)
    assert run.exit_code == 0, run.output
    result = json.loads(run.output[run.output.index("{") :])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["record"] for r in records]
    # Then the pairs come first (written as sub-tasks finished), equal to the result's
    pairs = [r for r in records if r["record"] == "pair"]
    assert kinds[: len(pairs)] == ["pair"] * len(pairs)
    strip = [{k: v for k, v in r.items() if k != "record"} for r in pairs]
    assert sorted(strip, key=lambda p: (p["a"], p["b"])) == result["pairs"]
    # and they were in the file before the batch finished (when its merge started)
    assert len(pairs_before_merge) == 1 and 0 < pairs_before_merge[0] <= len(pairs)
    # followed by every item and cluster
    assert kinds.count("item") == 400 and kinds.count("cluster") == len(result["clusters"])
    assert result["mode"] == "indexed"


def test_indexed_batch_with_many_identical_copies_equals_in_process(corpus):
    # Given a corpus where a few texts come back many times (boilerplate), some only
    # differing in case and spacing
    texts = list(corpus.texts[:120])
    for n in range(150):
        original = corpus.texts[n % 3]
        texts.append(original if n % 2 else "  " + original.upper())
    items = [{"id": f"d{n}", "text": t} for n, t in enumerate(texts)]
    # When the batch runs in indexed mode (LSH phases on the workers' side), grouped and
    # expanded
    ids = [i["id"] for i in items]
    for expand in (False, True):
        options = {"mode": "indexed", "expand_identical": expand}
        result = process_batch.apply(args=(items, 0.8), kwargs=options).get()
        # Then it finds exactly the in-process pairs and groups
        expected = near_duplicates(texts, 0.8, ids=ids, mode="indexed", expand_identical=expand)
        assert result["mode"] == "indexed"
        assert [(p["a"], p["b"], p["score"]) for p in result["pairs"]] == [
            (p.a, p.b, p.score) for p in expected.pairs
        ]
        assert result["duplicate_groups"] == [g.model_dump() for g in expected.duplicate_groups]
        assert result["document_pair_count"] == expected.document_pair_count
    assert len(expected.duplicate_groups) == 3 and {g.count for g in expected.duplicate_groups} == {
        51
    }  # three texts, 51 copies each
    assert len(expected.pairs) > 3 * (51 * 50 // 2)  # expanded: every pair of copies too


def test_an_indexed_batch_of_unrelated_texts_completes_without_pairs():
    # Given texts that share no band key, so some bucket partition has no candidate pair
    items = [
        "alpha beta gamma delta epsilon",
        "completely different words here now",
        "xyz 123 qqq www eee rrr",
    ]
    # When the batch runs in indexed mode
    result = process_batch.apply(args=(items,), kwargs={"mode": "indexed"}).get()
    # Then it completes with every item analysed and no pair
    assert result["mode"] == "indexed"
    assert (result["succeeded"], result["pairs"]) == (3, [])


def test_a_bucket_keeps_one_record_per_identical_text():
    import numpy as np

    from redundancy.core.lsh_tables import RECORD, first_copies

    # 1,000 copies of one text and 3 other texts, all sharing one band key
    records = np.zeros(1003, dtype=RECORD)
    records["key"] = 7
    records["text"] = [42] * 1000 + [1, 2, 3]
    records["pos"] = np.arange(1003)[::-1]
    kept = first_copies(records)
    assert sorted(kept["text"].tolist()) == [1, 2, 3, 42]
    assert kept["pos"][kept["text"] == 42].tolist() == [3]  # the lowest position


def test_items_that_are_not_text_fail_alone_and_the_batch_completes():
    # Given a batch with bytes, a lone surrogate (possible in JSON), a missing text
    items = [
        "Fine text. Fine text.",
        {"id": "bytes", "text": b"raw bytes"},
        {"id": "surrogate", "text": "half a pair \ud800 here"},
        {"id": "missing"},
        {"id": "number", "text": 42},
    ]
    result = process_batch.apply(args=(items,)).get()
    errors = {
        i["id"]: (i["error"]["type"], i["error"]["message"]) for i in result["items"] if i["error"]
    }
    assert errors == {
        "bytes": ("NotTextError", "text must be a string, got bytes"),
        "surrogate": ("NotTextError", "text is not valid Unicode (unpaired surrogate at character 12)"),  # noqa: E501
        "missing": ("NotTextError", "item has no text"),
        "number": ("NotTextError", "text must be a string, got int"),
    }  # fmt: skip
    assert (result["succeeded"], result["failed"]) == (1, 4)


@pytest.mark.parametrize("items", ["one long text", b"bytes", {"id": "a", "text": "t"}])
def test_items_must_be_a_list_not_one_text(items):
    with pytest.raises(InvalidInputError, match="items must be a list"):
        stage_batch(items)
