"""The pure core: scores, worked examples, chunked search equals brute force, limits."""

from __future__ import annotations

import random
from itertools import combinations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz

from redundancy.core import (
    SCORERS,
    analyze,
    content_hash,
    near_duplicates,
    normalise,
    similarity,
)
from redundancy.core.models import redundancy_level
from redundancy.core.pairs import find_pairs
from redundancy.core.text import split_sentences
from redundancy.errors import (
    EmptyTextError,
    InvalidInputError,
    NotTextError,
    TextTooLargeError,
)


def brute_force_pairs(texts, threshold, algorithm="ratio"):
    """The reference: score every pair with a plain Python call."""
    scorer = SCORERS[algorithm]
    norm = [normalise(t) for t in texts]
    out = []
    for i, j in combinations(range(len(texts)), 2):
        score = scorer(norm[i], norm[j], processor=None)
        if score / 100.0 >= threshold:
            out.append((i, j, score / 100.0))
    return out


def corpus_with_near_duplicates(seed: int, n: int = 120) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(400)]
    base = [" ".join(rng.choices(vocab, k=rng.randint(20, 60))) for _ in range(n // 3)]
    docs = list(base)
    for text in base:
        tokens = text.split()
        for _ in range(2):
            edited = [t if rng.random() > 0.08 else rng.choice(vocab) for t in tokens]
            docs.append(" ".join(edited))
    docs.append(docs[0].upper())  # exact duplicate after normalisation
    rng.shuffle(docs)
    return docs


# --- normalisation and hashing ----------------------------------------------------------


def test_normalise_folds_case_whitespace_and_compatibility_forms():
    # Given text differing only in case, whitespace and a ligature
    # Then the normalised forms and the hashes are equal
    assert normalise("  Straße\t\nofﬁce ") == "strasse office"
    assert content_hash("Hello   WORLD") == content_hash("hello world")
    assert content_hash("hello world") != content_hash("hello world!")


def test_split_sentences_keeps_closing_quotes_and_paragraphs():
    assert split_sentences('One. "Two!" Three?\n\nFour') == ["One.", '"Two!"', "Three?", "Four"]
    # single newlines are soft wraps, not sentence ends
    assert split_sentences("a wrapped\nline. Next.") == ["a wrapped\nline.", "Next."]


# --- similarity -----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(SCORERS))
def test_identical_texts_score_one(algorithm):
    result = similarity("The quick brown fox.", "the  QUICK brown fox.", algorithm)
    assert result.similarity_score == 1.0
    assert result.is_similar
    assert result.algorithm == algorithm


@pytest.mark.parametrize("algorithm", ["ratio", "token_sort_ratio", "token_set_ratio"])
@given(a=st.text(min_size=1, max_size=60), b=st.text(min_size=1, max_size=60))
@settings(max_examples=60, deadline=None)
def test_symmetric_scorers_are_symmetric_and_bounded(algorithm, a, b):
    assume(a.strip() and b.strip())
    ab = similarity(a, b, algorithm).similarity_score
    ba = similarity(b, a, algorithm).similarity_score
    assert ab == pytest.approx(ba)
    assert 0.0 <= ab <= 1.0


def test_similarity_threshold_and_common_words():
    result = similarity("the cat sat on the mat", "the dog sat on a log", threshold=0.5)
    assert result.common_words == 3  # the, sat, on
    assert result.similarity_score == pytest.approx(
        fuzz.ratio("the cat sat on the mat", "the dog sat on a log") / 100
    )
    assert result.is_similar == (result.similarity_score >= 0.5)


def test_unknown_algorithm_suggests_the_closest():
    with pytest.raises(InvalidInputError, match="Did you mean 'token_set_ratio'"):
        similarity("a", "b", "token_set_ration")


# --- analysis: the documented worked examples --------------------------------------------


@pytest.mark.parametrize(
    ("text", "score", "level"),
    [
        ("The cat sat. The cat sat.", 3 / 6, "medium"),
        (
            "Buy cheap shoes. Buy cheap shoes. Buy cheap shoes now. Shipping is free.",
            7 / 13,
            "medium",
        ),
        ("Every sentence here is different. Nothing repeats at all.", 0.0, "very_low"),
        ("Same. Same. Same. Same. Same.", 4 / 5, "high"),
        ("Only one sentence here", 0.0, "very_low"),
    ],
)
def test_redundancy_score_worked_examples(text, score, level):
    result = analyze(text)
    assert result.redundancy_score == pytest.approx(score)
    assert result.redundancy_level == level


def test_analysis_counts_and_lexical_redundancy():
    result = analyze("The cat sat. The cat sat.")
    assert (result.word_count, result.unique_words, result.sentence_count) == (6, 3, 2)
    assert result.character_count == len("The cat sat. The cat sat.")
    assert result.lexical_redundancy == pytest.approx(0.5)
    assert result.repeated_phrases[0].phrase == "the cat sat"
    assert result.repeated_phrases[0].count == 2
    assert result.content_hash == content_hash("The cat sat. The cat sat.")


def test_analysis_finds_near_duplicate_not_only_exact_sentences():
    text = "Our office opens at nine every morning. Our office opens at nine each morning. Bye."
    result = analyze(text, threshold=0.8)
    assert result.redundant_sentence_count == 1
    pair = result.near_duplicate_sentences[0]
    assert (pair.a, pair.b) == (0, 1)
    assert 0.8 <= pair.score < 1.0
    # a stricter threshold no longer counts it
    assert analyze(text, threshold=0.99).redundancy_score == 0.0


def test_analysis_matches_a_brute_force_definition_on_random_texts():
    rng = random.Random(7)
    phrases = [
        "alpha beta gamma delta.",
        "alpha beta gamma delts.",
        "one two three four.",
        "completely unrelated words here.",
        "one two three four five.",
    ]
    for _ in range(20):
        sentences = [rng.choice(phrases) for _ in range(rng.randint(2, 12))]
        text = " ".join(sentences)
        result = analyze(text, threshold=0.85)
        norm = [normalise(s) for s in split_sentences(text)]
        redundant = [
            any(fuzz.ratio(norm[i], norm[j]) / 100 >= 0.85 for i in range(j))
            for j in range(len(norm))
        ]
        words = [len(s.split()) for s in norm]
        expected = sum(w for w, r in zip(words, redundant, strict=True) if r) / sum(words)
        assert result.redundancy_score == pytest.approx(expected)


@pytest.mark.parametrize(
    ("score", "level"),
    [
        (0.0, "very_low"),
        (0.29, "very_low"),
        (0.3, "low"),
        (0.5, "medium"),
        (0.7, "high"),
        (0.89, "high"),
        (0.9, "very_high"),
        (1.0, "very_high"),
    ],
)
def test_redundancy_levels(score, level):
    assert redundancy_level(score) == level


# --- limits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("", EmptyTextError, "empty"),
        ("   \n\t", EmptyTextError, "whitespace"),
        (b"bytes", NotTextError, "must be a string"),
        (None, NotTextError, "must be a string"),
        ("x" * 101, TextTooLargeError, "limit of 100"),
    ],
)
def test_bad_inputs_raise_documented_errors(text, error, message):
    with pytest.raises(error, match=message):
        analyze(text, max_chars=100)


def test_default_size_limit_is_one_million_characters():
    with pytest.raises(TextTooLargeError, match=r"1,000,000 .*MAX_TEXT_CHARS"):
        analyze("a" * 1_000_001)


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5, "high"])
def test_bad_thresholds_are_refused(threshold):
    with pytest.raises(InvalidInputError, match="threshold"):
        analyze("some text", threshold=threshold)


# --- near-duplicate search --------------------------------------------------------------


@pytest.mark.parametrize("block_size", [7, 32, 2048])
@pytest.mark.parametrize("threshold", [0.7, 0.85])
def test_chunked_near_duplicates_equal_brute_force(block_size, threshold):
    docs = corpus_with_near_duplicates(seed=3)
    result = near_duplicates(docs, threshold, block_size=block_size, expand_identical=True)
    got = [(p.a, p.b, p.score) for p in result.pairs]
    expected = brute_force_pairs(docs, threshold)
    assert len(expected) > 40  # the corpus really has near-duplicates
    assert got == expected


@pytest.mark.parametrize("algorithm", list(SCORERS))
def test_every_scorer_equals_brute_force(algorithm):
    docs = corpus_with_near_duplicates(seed=11, n=45)
    result = near_duplicates(docs, 0.75, algorithm, block_size=16, expand_identical=True)
    assert [(p.a, p.b, p.score) for p in result.pairs] == brute_force_pairs(docs, 0.75, algorithm)


def test_clusters_are_connected_components_and_exact_flag():
    docs = ["alpha beta gamma", "ALPHA beta gamma", "alpha beta gamme", "zzz yyy", "qqq"]
    result = near_duplicates(docs, 0.8, ids=["a", "b", "c", "d", "e"])
    assert result.clusters == [["a", "b", "c"]]
    # a and b are one text: a duplicate group, and its pair with c names a, for 2 copies
    assert [(g.representative, g.ids) for g in result.duplicate_groups] == [("a", ["a", "b"])]
    assert [(p.id_a, p.id_b, p.exact, p.copies_a) for p in result.pairs] == [("a", "c", False, 2)]
    assert result.unique_count == 4
    expanded = near_duplicates(docs, 0.8, ids=["a", "b", "c", "d", "e"], expand_identical=True)
    exact = {(p.id_a, p.id_b): p.exact for p in expanded.pairs}
    assert exact == {("a", "b"): True, ("a", "c"): False, ("b", "c"): False}


def test_find_pairs_never_allocates_more_than_a_block(monkeypatch):
    # Given the cdist call is observed
    from redundancy.core import pairs as pairs_module

    shapes = []
    real = pairs_module.process.cdist

    def spy(a, b, **kw):
        shapes.append((len(a), len(b), kw["dtype"]))
        return real(a, b, **kw)

    monkeypatch.setattr(pairs_module.process, "cdist", spy)
    texts = [f"text number {i}" for i in range(100)]
    find_pairs(texts, scorer=fuzz.ratio, threshold=0.9, block_size=16)
    # Then every matrix is at most block x block, in one byte per score
    assert shapes and all(a <= 16 and b <= 16 and d is np.uint8 for a, b, d in shapes)
    # and the upper triangle of blocks is covered exactly once: 7 row blocks -> 28 blocks
    assert len(shapes) == 28


def test_expansion_gives_every_copy_its_representatives_pairs():
    from redundancy.core.duplicates import Grouping, canonical_pairs, expanded_pairs

    # positions 0, 2, 4 hold one text; 1 and 3 another; 5 a third (no copies)
    grouping = Grouping.of(["x", "y", "x", "y", "x", "z"])
    # shards report pairs between their own first copies, some more than once
    reported = [(2, 3, 90.0), (0, 1, 90.0), (3, 5, 85.0), (1, 5, 85.0), (0, 2, 100.0)]
    pairs = canonical_pairs(reported, grouping)
    assert pairs == [(0, 1, 90.0), (1, 5, 85.0)]  # once each, between representatives
    out = expanded_pairs(pairs, grouping, limit=100)
    assert out == sorted([
        (0, 1, 90.0), (1, 2, 90.0), (1, 4, 90.0), (0, 3, 90.0), (2, 3, 90.0), (3, 4, 90.0),
        (1, 5, 85.0), (3, 5, 85.0),
        (0, 2, 100.0), (0, 4, 100.0), (2, 4, 100.0), (1, 3, 100.0),
    ])  # fmt: skip
