"""Identical documents are duplicate groups, never n(n-1)/2 pairs: in-process, in a batch
(every mode, copies across chunks), in every output format and in the batch event."""

from __future__ import annotations

import csv
import json
import tracemalloc
from itertools import combinations

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from redundancy.cli import cli
from redundancy.core import SCORERS, near_duplicates, normalise
from redundancy.core.duplicates import IDENTICAL_SCORE
from redundancy.errors import InvalidInputError
from redundancy.events.factories import batch_event
from redundancy.tasks import process_batch

BLANK = "This page intentionally left blank."
TEMPLATE = "Terms and conditions apply. See the store for details."
NEAR_TEMPLATE = "Terms and conditions apply. See a store for details."


def corpus_with_copies(copies: int) -> list[str]:
    """Two boilerplate texts with many copies (case and spacing vary), one near-duplicate
    of the second, and unrelated texts; copies spread over the whole corpus."""
    texts = []
    for n in range(copies):
        texts.append(BLANK if n % 2 else f"  {BLANK.upper()} ")
        if n % 3 == 0:
            texts.append(TEMPLATE)
        if n % 50 == 0:
            texts.append(f"An unrelated document number {n} about topic {n * 7}.")
    texts.append(NEAR_TEMPLATE)
    return texts


def document_pairs(result) -> set[tuple[int, int]]:
    """Every document pair a grouped result stands for (how a user maps it back)."""
    members = {g.position: g.positions for g in result.duplicate_groups}
    out = {
        (min(x, y), max(x, y))
        for p in result.pairs
        for x in members.get(p.a, [p.a])
        for y in members.get(p.b, [p.b])
    }
    out |= {pair for g in result.duplicate_groups for pair in combinations(g.positions, 2)}
    return out


def test_thousands_of_identical_copies_are_one_group_in_linear_memory():
    # Given 2,000 copies of one short text (main used 2.5 GB and 49 s for these)
    texts = [BLANK] * 2000 + ["Something else entirely, written once."]
    # When the near duplicates are searched
    tracemalloc.start()
    try:
        result = near_duplicates(texts, 0.8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then the copies are one group listing every member, not 1,999,000 pairs
    assert result.pairs == []
    [group] = result.duplicate_groups
    assert (group.count, group.representative, group.position) == (2000, "0", 0)
    assert group.ids == [str(i) for i in range(2000)] and group.positions == list(range(2000))
    assert group.content_hash == result.model_dump()["duplicate_groups"][0]["content_hash"]
    assert result.document_pair_count == 2000 * 1999 // 2
    assert result.clusters == [[str(i) for i in range(2000)]]  # every member
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_a_pair_between_two_groups_is_reported_once_between_representatives():
    # Given two texts that are near duplicates, each with several copies
    texts = [TEMPLATE, NEAR_TEMPLATE, TEMPLATE.upper(), NEAR_TEMPLATE, TEMPLATE]
    # When searched
    result = near_duplicates(texts, 0.8)
    # Then one pair names both representatives, with the copies behind each side
    [pair] = result.pairs
    assert (pair.a, pair.b, pair.copies_a, pair.copies_b, pair.exact) == (0, 1, 3, 2, False)
    assert [(g.position, g.positions) for g in result.duplicate_groups] == [
        (0, [0, 2, 4]),
        (1, [1, 3]),
    ]
    assert result.document_pair_count == 3 * 2 + 3 + 1
    assert result.clusters == [["0", "1", "2", "3", "4"]]


@pytest.mark.parametrize("mode", ["all-pairs", "exact", "indexed"])
def test_expansion_on_request_equals_every_document_pair(mode):
    # Given copies, near duplicates and unrelated texts
    texts = corpus_with_copies(40)
    grouped = near_duplicates(texts, 0.8, mode=mode)
    # When the identical texts are expanded to pairs
    expanded = near_duplicates(texts, 0.8, mode=mode, expand_identical=True)
    # Then the expansion lists exactly the document pairs the groups stand for
    assert expanded.expanded and expanded.expansion_cut is None
    assert {(p.a, p.b) for p in expanded.pairs} == document_pairs(grouped)
    assert len(expanded.pairs) == grouped.document_pair_count == expanded.document_pair_count
    assert all(p.score == 1.0 for p in expanded.pairs if p.exact)
    assert expanded.clusters == grouped.clusters


def test_expansion_is_capped_with_a_clear_message():
    # Given 300 copies (44,850 document pairs)
    texts = [BLANK] * 300
    # When expanded with a cap of 1,000 pairs
    result = near_duplicates(texts, 0.8, expand_identical=True, max_expanded_pairs=1000)
    # Then the list stops at the cap, says so, and the group still lists every copy
    assert len(result.pairs) == 1000 and result.document_pair_count == 44_850
    assert "1,000 of 44,850" in result.expansion_cut
    assert "EXPAND_IDENTICAL_MAX_PAIRS" in result.expansion_cut
    assert result.duplicate_groups[0].count == 300


@pytest.mark.parametrize("algorithm", list(SCORERS))
@given(text=st.text(min_size=1, max_size=200))
@settings(max_examples=40, deadline=None)
def test_identical_texts_score_the_identical_score_under_every_scorer(algorithm, text):
    # (copies are paired at IDENTICAL_SCORE without being scored)
    norm = normalise(text)
    if norm:
        assert SCORERS[algorithm](norm, norm, processor=None) == IDENTICAL_SCORE


@pytest.mark.parametrize("mode", ["all-pairs", "exact", "indexed"])
def test_a_batch_with_copies_across_chunks_equals_in_process(settings_env, mode):
    # Given chunks of 25 documents, so copies of each text fall in many chunks and every
    # pair shard (or verify task) sees its own first copies
    settings_env(BATCH_CHUNK_SIZE="25")
    texts = corpus_with_copies(60)
    items = [{"id": f"d{n}", "text": t} for n, t in enumerate(texts)]
    for expand in (False, True):
        # When the batch runs
        options = {"mode": mode, "expand_identical": expand}
        result = process_batch.apply(args=(items, 0.8), kwargs=options).get()
        # Then it reports exactly what the in-process search does: pairs between the
        # batch's representatives, once each, and the same groups and clusters
        expected = near_duplicates(
            texts, 0.8, ids=[i["id"] for i in items], mode=mode, expand_identical=expand
        )
        assert result["mode"] == mode
        assert result["pairs"] == [p.model_dump() for p in expected.pairs]
        assert result["duplicate_groups"] == [g.model_dump() for g in expected.duplicate_groups]
        assert result["clusters"] == expected.clusters
        assert result["document_pair_count"] == expected.document_pair_count
    assert len(expected.duplicate_groups) == 2


def test_the_batch_event_counts_groups_and_document_pairs():
    # Given a batch of 500 copies of one text and one other text
    items = [BLANK] * 500 + [TEMPLATE]
    result = process_batch.apply(args=(items,)).get()

    class Request:
        id = result["batch_id"]
        headers: dict[str, str] = {}
        correlation_id = None

    # When its batch.completed event is built
    payload = batch_event(Request(), result).payload
    # Then it counts one group, no pair between distinct texts, every document pair
    assert (payload.pair_count, payload.duplicate_group_count) == (0, 1)
    assert payload.document_pair_count == 500 * 499 // 2
    assert payload.cluster_count == 1 and payload.unique_count == 2


def test_crd_batch_writes_groups_in_every_format(tmp_path):
    # Given a JSONL corpus with copies
    texts = corpus_with_copies(30)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"d{n}", "text": t}) + "\n"
                              for n, t in enumerate(texts)))  # fmt: skip
    runner = CliRunner()
    # When crd batch writes JSONL (streamed), CSV, and prints the summary
    jsonl, table = tmp_path / "out.jsonl", tmp_path / "pairs.csv"
    run = runner.invoke(cli, ["batch", str(source), "--json", "--out", str(jsonl)])
    assert run.exit_code == 0, run.output
    result = json.loads(run.output[run.output.index("{") :])
    assert runner.invoke(cli, ["batch", str(source), "--out", str(table)]).exit_code == 0
    summary = runner.invoke(cli, ["batch", str(source)])
    # Then the JSONL holds exactly the result's pairs and one record per group
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    pairs = [
        {k: v for k, v in r.items() if k != "record"} for r in records if r["record"] == "pair"
    ]
    assert sorted(pairs, key=lambda p: (p["a"], p["b"])) == result["pairs"]
    groups = [r for r in records if r["record"] == "group"]
    assert [{k: v for k, v in g.items() if k not in ("record", "cluster")} for g in groups] == (
        result["duplicate_groups"]
    )
    assert all(g["cluster"] is not None for g in groups)
    # the CSV has the pairs, then each copy beside its representative: linear in copies
    rows = list(csv.DictReader(table.open()))
    copies = [r for r in rows if r["exact"] == "True"]
    assert len(rows) - len(copies) == len(result["pairs"])
    assert len(copies) == sum(g["count"] - 1 for g in result["duplicate_groups"])
    first = result["duplicate_groups"][0]
    assert {(r["id_a"], r["id_b"]) for r in copies} >= {
        (first["ids"][0], m) for m in first["ids"][1:]
    }
    # and the summary counts the groups and the document pairs they stand for
    assert "identical texts" in summary.output and "2 groups of" in summary.output
    assert f"{result['document_pair_count']:,}" in summary.output


def test_crd_batch_expand_identical_is_capped_by_its_setting(tmp_path, settings_env):
    # Given 100 copies (4,950 pairs) and a cap of 100 pairs
    settings_env(EXPAND_IDENTICAL_MAX_PAIRS="100")
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"d{n}", "text": BLANK}) + "\n" for n in range(100))
    )
    out = tmp_path / "out.jsonl"
    # When crd batch expands them
    run = CliRunner().invoke(cli, ["batch", str(source), "--expand-identical", "--out", str(out)])
    # Then 100 pairs are written and the summary says where the list stopped
    assert run.exit_code == 0, run.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["record"] == "pair" for r in records) == 100
    assert "100 of 4,950" in " ".join(run.output.split())


def test_near_duplicates_refuses_a_bare_string_and_non_sequences():
    # a string would be one document per character; an int is no collection at all
    for texts, got in (("abc", "str"), (5, "int"), (b"ab", "bytes"), ({"a": "b"}, "dict")):
        with pytest.raises(InvalidInputError, match=f"texts must be a list of strings, got {got}"):
            near_duplicates(texts)
    with pytest.raises(InvalidInputError, match="ids must be a list"):
        near_duplicates(["a b", "c d"], ids="ab")
    # any other iterable of texts is fine
    assert near_duplicates(t for t in ("same text", "same text")).duplicate_groups


@pytest.mark.parametrize(("items", "got"), [(5, "int"), (None, "NoneType"), (3.5, "float")])
def test_process_batch_refuses_items_that_are_not_a_list(items, got):
    with pytest.raises(InvalidInputError, match=f"items must be a list .* got {got}"):
        process_batch.apply(args=(items,)).get()
