"""Work bounded by input: limits on the normalised text, degenerate paths that score
nothing, scorer ceilings and the work model that refuses costly input before scoring."""

from __future__ import annotations

import re
import sys
import time
import tracemalloc
import unicodedata
from itertools import combinations, product
from string import ascii_lowercase

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from redundancy.core import analyze, near_duplicates, normalise, similarity
from redundancy.core import pairs as pairs_module
from redundancy.core import scorers as scorers_module
from redundancy.core import text as text_module
from redundancy.core.cost import (
    CALL_SECONDS,
    CHAR_SECONDS,
    PARTIAL_MAX_CHARS,
    pair_seconds,
    pairs_seconds,
    worst_case,
)
from redundancy.core.text import (
    GRAPHEME_JOINER,
    MAX_EXPANSION,
    NON_STARTERS_FROM,
    NON_STARTERS_TO,
    STREAM_SAFE_RUN,
    is_non_starter,
    validate_text,
)
from redundancy.errors import TextTooLargeError, WorkLimitError
from redundancy.tasks import process_batch

EXPANDING = "\ufdfa"  # one character, 18 after NFKC
TRICKY_CHARACTERS = [*"ae \n\u0301\u0327\u3300\u00df\u1100\u1161\u00a0", EXPANDING]
"""Combining marks, Hangul jamo that compose, characters NFKC or casefold expand, spaces."""


@pytest.fixture
def cdist_calls(monkeypatch):
    """Every rapidfuzz ``cdist`` call the core makes, by its row count."""
    calls: list[int] = []
    real = pairs_module.process.cdist

    def spy(rows, columns, **kw):
        calls.append(len(rows))
        return real(rows, columns, **kw)

    monkeypatch.setattr(pairs_module.process, "cdist", spy)
    return calls


# --- limits on the normalised text ------------------------------------------------------


def test_a_text_that_grows_past_the_limit_when_normalised_is_refused_early():
    # Given 100,000 characters that normalise to 1,800,000 (limit 1,000,000)
    text = EXPANDING * 100_000
    # When it is validated (every entry point validates first)
    tracemalloc.start()
    try:
        with pytest.raises(TextTooLargeError, match="grows past 1,000,000 when normalised"):
            analyze(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then it was refused before the whole text was normalised (that alone takes 36 MiB)
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    with pytest.raises(TextTooLargeError, match="normalised"):
        similarity("short", text)
    with pytest.raises(TextTooLargeError, match="normalised"):
        near_duplicates(["short", text])


def test_no_code_point_grows_more_than_max_expansion():
    # (texts shorter than max_chars / MAX_EXPANSION are never normalised to check)
    grown = max(
        len(normalise(chr(c))) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000
    )
    assert grown == MAX_EXPANSION


@given(
    text=st.text(
        alphabet=st.sampled_from(TRICKY_CHARACTERS),
        min_size=1,
        max_size=120,
    ),
    limit=st.integers(min_value=1, max_value=200),
)
@example(text="\u00df" * 6 + " b", limit=13)  # a space cut off both slices: 13 + 1 characters
@example(text="a" + "\u0327\u0301" * 20, limit=41)  # the whole gets a joiner, no slice does
@settings(max_examples=300, deadline=None)
def test_the_sliced_check_never_lets_a_longer_normal_form_through(text, limit):
    if not text.strip() or len(text) > limit:
        return
    exact = len(normalise(text))
    # When it is validated against the limit, in slices of 7 characters, so cuts fall
    # inside combining sequences, whitespace runs and Hangul syllables
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(text_module, "NORMALISE_SLICE", 7)
            patch.setattr(text_module, "MAX_EXPANSION", 10**6)  # always check
            validate_text(text, max_chars=limit)
    except TextTooLargeError:
        # Then a refused text normalises past the limit
        assert exact > limit
    else:
        # and an accepted one never does
        assert exact <= limit


def test_a_long_text_that_does_not_grow_is_accepted_up_to_the_limit():
    # Given non-ASCII texts of exactly the limit that normalise to the same length
    # (checked in 61 slices, each cut a place where the sum could be off by one)
    for text in (
        "".join(chr(0x4E00 + i % 3000) for i in range(1_000_000)),
        ("ab\u200b\u202e\u2066 " * 200_000)[:1_000_000],
        "\u00e9 " * 500_000,
    ):
        # When validated, Then accepted
        assert validate_text(text, max_chars=1_000_000) is text


def test_long_runs_of_combining_marks_normalise_in_linear_time():
    # Given one letter and 300,000 combining marks of mixed classes (CPython reorders a
    # run in quadratic time: this took 80 s)
    text = "a" + "\u0327\u0301\u0323" * 100_000
    # When normalised, as every hash and comparison does
    got = time.process_time()
    normal = normalise(text)
    got = time.process_time() - got
    # Then a joiner follows every 30 marks, so no run is longer
    assert normal.count(GRAPHEME_JOINER) == 300_000 // STREAM_SAFE_RUN - 1
    assert max(len(run) for run in normal.split(GRAPHEME_JOINER)) <= STREAM_SAFE_RUN + 1
    # and it stayed within its documented linear budget (3x, as the hostile-input suite)
    assert got < 3 * CHAR_SECONDS * len(text) + 1.0


@given(text=st.text(alphabet=st.sampled_from(TRICKY_CHARACTERS), max_size=200))
@settings(max_examples=200, deadline=None)
def test_text_without_long_runs_of_marks_normalises_to_plain_nfkc(text):
    longest = max((len(r) for r in re.findall("[\u0301\u0327]+", text)), default=0)
    if longest <= STREAM_SAFE_RUN:
        expected = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
        assert normalise(text) == expected


def test_every_non_starter_lies_where_the_marking_table_looks():
    outside = [
        c
        for c in [*range(0, NON_STARTERS_FROM), *range(NON_STARTERS_TO, sys.maxunicode + 1)]
        if not 0xD800 <= c < 0xE000 and is_non_starter(chr(c))
    ]
    assert outside == []


# --- degenerate paths score nothing --------------------------------------------------------


def test_one_long_sentence_is_never_scored(cdist_calls):
    # Given one sentence of 200,000 characters (it once cost a full self-comparison)
    text = " ".join(["word"] * 40_000)
    # When analysed
    result = analyze(text)
    # Then no cdist ran and the result is the documented one for one sentence
    assert cdist_calls == []
    assert (result.sentence_count, result.redundancy_score) == (1, 0.0)


def test_a_text_of_one_repeated_sentence_is_never_scored(cdist_calls):
    result = analyze("Same words here. " * 5_000)
    assert cdist_calls == []  # one distinct sentence: every other is an exact repeat
    assert result.redundant_sentence_count == 4_999


def test_identical_texts_are_compared_without_scoring(monkeypatch):
    # Given the scorer is watched
    called = []
    monkeypatch.setitem(scorers_module.SCORERS, "ratio", lambda *a, **k: called.append(1) or 0.0)
    # When two texts identical after normalisation are compared
    result = similarity("Hello   WORLD " * 10_000, "hello world " * 10_000)
    # Then they score 1.0 and the scorer never ran
    assert (result.similarity_score, called) == (1.0, [])


def test_a_corpus_of_one_distinct_text_searches_nothing(cdist_calls):
    result = near_duplicates(["one text"] * 50, mode="all-pairs")
    assert cdist_calls == [] and result.duplicate_groups[0].count == 50


# --- scorer ceilings and the work model ---------------------------------------------------


@pytest.mark.parametrize("algorithm", ["partial_ratio", "WRatio"])
def test_partial_scorers_refuse_texts_over_their_ceiling(algorithm):
    long_text = "a different word " * (PARTIAL_MAX_CHARS // 10)
    with pytest.raises(WorkLimitError, match=f"{algorithm} compares texts of at most 2,000"):
        similarity(long_text, "a short text", algorithm)
    with pytest.raises(WorkLimitError, match="document '1' has"):
        near_duplicates(["short one", long_text], algorithm=algorithm)
    # and within it they run
    assert similarity(long_text[:1_500], "a short text", algorithm).similarity_score < 1


def test_a_batch_fails_a_document_too_long_for_its_scorer_and_still_groups_it():
    # Given a partial_ratio batch with a long document twice and short ones
    long_text = "many words in a long document " * 100
    items = [long_text, "short text one", long_text.upper(), "short text one!"]
    # When it runs
    result = process_batch.apply(args=(items,), kwargs={"algorithm": "partial_ratio"}).get()
    # Then the long copies fail with the reason, keep their hash and form a group
    errors = [i for i in result["items"] if i["error"]]
    assert [i["id"] for i in errors] == ["0", "2"]
    assert all(i["error"]["type"] == "WorkLimitError" for i in errors)
    assert errors[0]["content_hash"] == errors[1]["content_hash"] is not None
    assert [g["ids"] for g in result["duplicate_groups"]] == [["0", "2"]]
    assert [(p["id_a"], p["id_b"]) for p in result["pairs"]] == [("1", "3")]


def test_an_analysis_over_the_work_limit_is_refused_before_scoring(cdist_calls):
    # Given 17,576 distinct three-letter sentences (154 million pairs)
    text = " ".join(f"{''.join(p)}." for p in product(ascii_lowercase, repeat=3))
    # When analysed with a limit of 1 s
    with pytest.raises(WorkLimitError, match=r"17,576 distinct sentences .*\(MAX_WORK_SECONDS\)"):
        analyze(text, max_seconds=1.0)
    # Then nothing was scored
    assert cdist_calls == []


def test_a_comparison_over_the_work_limit_is_refused():
    cjk = "".join(chr(0x4E00 + (i * 7919) % 3000) for i in range(400_000))
    other = cjk[::-1]
    with pytest.raises(WorkLimitError, match=r"comparing these texts would cost about"):
        similarity(cjk, other)


@given(lengths=st.lists(st.integers(min_value=1, max_value=5_000), max_size=30))
@settings(max_examples=200, deadline=None)
@pytest.mark.parametrize("algorithm", ["ratio", "token_set_ratio", "partial_ratio", "WRatio"])
def test_the_closed_form_bounds_the_sum_over_pairs(algorithm, lengths):
    # (an analysis is estimated without visiting its pairs)
    each = sum(pair_seconds(algorithm, m, n) for m, n in combinations(lengths, 2))
    assert pairs_seconds(algorithm, lengths) >= each * (1 - 1e-9)


def test_worst_case_grows_with_input_and_stops_at_the_limit():
    sizes = [100, 1_000, 10_000, 100_000, 1_000_000]
    costs = [worst_case(n, "ratio", max_seconds=30.0) for n in sizes]
    assert costs == sorted(costs) and costs[0] < 0.01
    # scoring stops at the limit; only the linear work grows past it
    assert costs[-1] == pytest.approx(30.0 + CHAR_SECONDS * 1_000_000 + CALL_SECONDS)


def test_expansion_constant_is_what_normalisation_really_does():
    assert len(unicodedata.normalize("NFKC", EXPANDING)) == MAX_EXPANSION


# --- memory of the sentence search ---------------------------------------------------------


def test_thousands_of_similar_sentences_are_counted_in_bounded_memory():
    # Given 3,000 distinct sentences that are all near duplicates of each other
    # (4.5 million pairs: 108 MB as arrays if they were all kept)
    text = " ".join(
        f"The quick brown fox number {n:05d} jumps over the lazy dog." for n in range(3000)
    )
    # When analysed
    tracemalloc.start()
    try:
        result = analyze(text, threshold=0.8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then every pair is counted, every later sentence is redundant, the 20 best pairs are
    # listed, and the peak stays far below the pairs' size
    assert result.near_duplicate_pair_count == 3000 * 2999 // 2
    assert result.redundant_sentence_count == 2999
    assert len(result.near_duplicate_sentences) == 20
    assert peak < 48 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_the_listed_sentence_pairs_are_the_best_by_score_then_position():
    # Given many pairs tied on score across several blocks of the search
    sentences = [f"Item {n:04d} is in stock today." for n in range(700)]  # two blocks
    text = " ".join(sentences)
    result = analyze(text, threshold=0.9)
    # Then the listed pairs are the first 20 of all pairs sorted by (-score, a, b)
    from rapidfuzz import fuzz

    norm = [normalise(s) for s in sentences]
    scores = {(a, b): fuzz.ratio(norm[a], norm[b]) for a, b in combinations(range(700), 2)}
    scored = [(-score, a, b) for (a, b), score in scores.items() if score >= 90]
    expected = [(a, b) for _, a, b in sorted(scored)[:20]]
    assert [(p.a, p.b) for p in result.near_duplicate_sentences] == expected
