"""Search modes: exact equals brute force; indexed has precision 1.0 and recall >= 0.99."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.corpora import debian_corpus, synthetic_corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz
from rapidfuzz.distance import LCSseq

from redundancy.core import AUTO_INDEXED_FROM, near_duplicates, normalise
from redundancy.core.bounds import BoundPlan, exact_pairs, partition_alphabet
from redundancy.core.lsh import LSHParams, colliding_pairs, indexed_pairs, target_jaccard
from redundancy.core.neardup import resolve_mode
from redundancy.core.pairs import find_pairs
from redundancy.errors import InvalidInputError
from tests.services import require


def triples(found) -> list[tuple[int, int, float]]:
    return sorted(
        zip(found.left.tolist(), found.right.tolist(), found.scores.tolist(), strict=True)
    )


def brute(rows, columns=None, *, algorithm="ratio", threshold=0.8):
    return triples(find_pairs(rows, columns, scorer=getattr(fuzz, algorithm), threshold=threshold))


# -- the bounds themselves -----------------------------------------------------------

short_text = st.text(alphabet="abcde ,.", min_size=0, max_size=40)


@given(a=short_text, b=short_text, k=st.integers(1, 6))
def test_each_bound_is_at_least_the_lcs(a, b, k):
    from collections import Counter

    lcs = LCSseq.similarity(a, b)
    assert min(len(a), len(b)) >= lcs  # bound 1
    ca, cb = Counter(a), Counter(b)
    assert sum(min(ca[c], cb[c]) for c in ca) >= lcs  # bound 2
    groups = partition_alphabet(Counter(a + b + "abcde ,."), k)
    projected = sum(
        LCSseq.similarity("".join(c for c in a if c in g), "".join(c for c in b if c in g))
        for g in groups
    )
    assert projected >= lcs  # bound 3


# -- exact mode == brute force --------------------------------------------------------

words = st.sampled_from(
    ["lorem", "ipsum", "dolor", "sit", "amet", "x", "qu", "éé", "ß", "a1", "😀x"]
)


@st.composite
def corpora(draw):
    """Random texts plus edited copies of some of them (so there are pairs to find)."""
    base = draw(
        st.lists(st.lists(words, min_size=1, max_size=30).map(" ".join), min_size=2, max_size=25)
    )
    copies = []
    for text in draw(st.lists(st.sampled_from(base), max_size=10)):
        tokens = text.split()
        i = draw(st.integers(0, len(tokens) - 1))
        tokens[i] = draw(words)
        copies.append(" ".join(tokens))
    return [normalise(t) for t in base + copies]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=corpora(),
    threshold=st.floats(0.3, 1.0),
    algorithm=st.sampled_from(["ratio", "token_sort_ratio"]),
)
def test_exact_mode_equals_brute_force_on_random_corpora(texts, threshold, algorithm):
    assert triples(
        exact_pairs(texts, algorithm=algorithm, threshold=threshold, block_size=7)
    ) == brute(texts, algorithm=algorithm, threshold=threshold)


@settings(max_examples=30, deadline=None)
@given(texts=corpora(), threshold=st.floats(0.3, 1.0))
def test_exact_mode_equals_brute_force_across_two_sides(texts, threshold):
    half = len(texts) // 2
    left, right = texts[:half] or texts[:1], texts[half:]
    assert triples(
        exact_pairs(left, right, algorithm="ratio", threshold=threshold, block_size=5)
    ) == brute(left, right, threshold=threshold)


def test_exact_mode_on_scorers_without_bounds_is_all_pairs():
    texts = [normalise(t) for t in ["the cat sat", "the cat sat on the mat", "a dog", "cat"]]
    for algorithm in ("partial_ratio", "token_set_ratio", "WRatio"):
        assert triples(exact_pairs(texts, algorithm=algorithm, threshold=0.6)) == brute(
            texts, algorithm=algorithm, threshold=0.6
        )


@pytest.fixture(scope="module")
def debian_paragraphs() -> list[str]:
    corpus = debian_corpus(paragraphs=True, min_chars=120, max_chars=4000, limit=900, seed=3)
    require(len(corpus.texts) >= 500, "the Debian licence texts in /usr/share/doc")
    return sorted({normalise(t) for t in corpus.texts})


def test_exact_mode_equals_brute_force_on_real_licence_texts(debian_paragraphs):
    # Given real paragraphs of licence and copyright files (many near-duplicates)
    expected = brute(debian_paragraphs, threshold=0.8)
    # When exact mode searches them, Then it finds the same pairs with the same scores
    assert len(expected) > 100
    assert triples(exact_pairs(debian_paragraphs, algorithm="ratio", threshold=0.8)) == expected


# -- indexed mode: precision 1.0, recall >= 0.99 ----------------------------------------


@pytest.fixture(scope="module")
def injected() -> list[str]:
    corpus = synthetic_corpus(1500, seed=11, copy_share=0.15, edit_share=0.05)
    return [normalise(t) for t in corpus.texts]


def test_indexed_mode_has_precision_one_and_recall_above_99_percent(injected):
    # Given 1,500 documents, 15% of them copies of others with 5% of their words edited
    expected = set(triples(exact_pairs(injected, algorithm="ratio", threshold=0.8)))
    assert len(expected) > 200
    # When indexed mode searches them
    found = set(triples(indexed_pairs(injected, algorithm="ratio", threshold=0.8)))
    # Then every pair it returns is a true pair with the exact score (precision 1.0)
    assert found <= expected
    # and it misses less than 1% of the true pairs
    assert len(found) / len(expected) >= 0.99


def test_indexed_mode_on_real_licence_texts_is_precise(debian_paragraphs):
    expected = set(brute(debian_paragraphs, threshold=0.8))
    found = set(triples(indexed_pairs(debian_paragraphs, algorithm="ratio", threshold=0.8)))
    assert found <= expected
    assert len(found) / len(expected) >= 0.97  # recall on real text is measured, not promised


def test_indexed_mode_across_two_sides_finds_only_cross_pairs(injected):
    left, right = injected[:700], injected[700:]
    found = set(triples(indexed_pairs(left, right, algorithm="ratio", threshold=0.8)))
    # (exact mode is brute force's equal, see above, and much faster)
    expected = set(triples(exact_pairs(left, right, algorithm="ratio", threshold=0.8)))
    assert len(expected) > 50
    assert found <= expected and len(found) >= 0.99 * len(expected)


def test_lsh_parameters_follow_the_threshold():
    assert target_jaccard(0.9) > target_jaccard(0.8) > target_jaccard(0.7)
    for threshold in (0.75, 0.8, 0.85, 0.9, 0.95):
        for documents in (1_000, 100_000):
            params = LSHParams.for_threshold(threshold, documents)
            assert params.miss_probability(target_jaccard(threshold)) <= 1e-3
            assert params.rounds * params.bands_per_round >= params.bands


def test_colliding_pairs_are_every_pair_sharing_a_key():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 40, size=300).astype(np.uint64)
    positions = np.arange(300, dtype=np.int64) // 3  # three keys per position
    lo, hi = colliding_pairs(keys, positions)
    naive = {
        (min(int(positions[i]), int(positions[j])), max(int(positions[i]), int(positions[j])))
        for i in range(300)
        for j in range(300)
        if keys[i] == keys[j] and positions[i] != positions[j]
    }
    assert set(zip(lo.tolist(), hi.tolist(), strict=True)) == naive


def test_plan_uses_a_partition_when_it_pays(injected):
    assert BoundPlan.build(injected, 0.8).groups  # unrelated texts sit far below 0.8


# -- choosing a mode --------------------------------------------------------------------


def test_auto_mode_is_exact_below_the_limit_and_indexed_from_it():
    assert resolve_mode("auto", AUTO_INDEXED_FROM - 1, "ratio") == "exact"
    assert resolve_mode("auto", AUTO_INDEXED_FROM, "ratio") == "indexed"
    assert resolve_mode("indexed", 10, "partial_ratio") == "all-pairs"
    assert resolve_mode("exact", 10, "WRatio") == "all-pairs"
    assert resolve_mode("indexed", 10, "ratio", 0.7) == "exact"  # too little shingle signal
    assert resolve_mode("indexed", 10, "ratio", 0.75) == "indexed"
    with pytest.raises(InvalidInputError, match="unknown mode"):
        resolve_mode("fast", 10, "ratio")


def test_near_duplicates_gives_the_same_result_in_every_exact_mode(injected):
    texts = injected[:300] + injected[:3]  # exact duplicates too
    results = {m: near_duplicates(texts, 0.8, mode=m) for m in ("all-pairs", "exact", "indexed")}
    assert results["exact"].mode == "exact"
    assert results["indexed"].mode == "indexed"
    assert results["exact"].pairs == results["all-pairs"].pairs
    assert results["exact"].clusters == results["all-pairs"].clusters
    assert set(results["indexed"].pairs) <= set(results["exact"].pairs)
    assert near_duplicates(texts[:50], 0.8).mode == "exact"
