"""Redundancy analysis of one text.

``redundancy_score`` answers "what share of this text's words sit in sentences that repeat
an earlier sentence?". A sentence repeats an earlier one when their normalised forms score
``>= threshold`` under rapidfuzz ``ratio`` (or the chosen scorer). Worked examples (ratio,
threshold 0.8), also checked by the unit tests:

* ``"The cat sat. The cat sat."``: sentence 2 repeats sentence 1; 3 of 6 words -> 0.5.
* ``"Buy cheap shoes. Buy cheap shoes. Buy cheap shoes now. Shipping is free."``:
  sentences 2 and 3 repeat sentence 1 (3 + 4 words) out of 13 words -> 7/13 = 0.538
  (``medium``); "buy cheap shoes." vs "buy cheap shoes now." scores 0.889.
* ``"Every sentence here is different. Nothing repeats at all."``: -> 0.0.

A text of ``n`` identical sentences scores ``(n - 1) / n``; one sentence always scores 0.
Only distinct sentences are scored, and only when there are two or more of them; their
comparison is refused before it starts when it would cost more than ``max_seconds``
(``redundancy.core.cost``).
``lexical_redundancy`` keeps the original service's word-level measure,
``1 - unique_words / word_count``.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

import numpy as np

from redundancy.core.cost import DEFAULT_MAX_WORK_SECONDS, check_work, is_wide, pairs_seconds
from redundancy.core.models import (
    AnalysisResult,
    RepeatedPhrase,
    SentencePair,
    redundancy_level,
)
from redundancy.core.pairs import PairArrays, iter_pairs
from redundancy.core.phases import CDIST, NORMALISE, phase
from redundancy.core.scorers import (
    DEFAULT_ALGORITHM,
    DEFAULT_THRESHOLD,
    get_scorer,
    validate_threshold,
)
from redundancy.core.text import (
    DEFAULT_MAX_CHARS,
    hash_normalised,
    normalise,
    split_sentences,
    validate_text,
    words,
)

ANALYSIS_VERSION: Final = 2
"""Bump when results change for the same input, so cached results are not reused.
2: sentence pairs tied at the 20th score are chosen by position (they were arbitrary);
runs of more than 30 combining marks are normalised in stream-safe form."""
PHRASE_LENGTH: Final = 3
"""Words per n-gram reported in ``repeated_phrases``."""
MAX_REPORTED: Final = 20
"""How many sentence pairs / phrases a result lists (counts always cover all of them)."""
MAX_SNIPPET: Final = 200
"""Characters of a sentence quoted in a result."""
ANALYSIS_BLOCK: Final = 512
"""Sentences per side of one block of the sentence search: its pairs (at most 512 x 512,
24 bytes each, about 6 MiB) are reduced before the next block is scored."""


def analyze(
    text: str,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    algorithm: str = DEFAULT_ALGORITHM,
    max_chars: int = DEFAULT_MAX_CHARS,
    workers: int = 1,
    max_seconds: float = DEFAULT_MAX_WORK_SECONDS,
) -> AnalysisResult:
    """Measure how much ``text`` repeats itself (see the module docstring).

    Raises ``WorkLimitError`` when comparing its distinct sentences would cost more than
    ``max_seconds`` by ``redundancy.core.cost``'s model (before any scoring).
    """
    validate_text(text, max_chars=max_chars)
    threshold = validate_threshold(threshold)
    scorer = get_scorer(algorithm)
    with phase(NORMALISE):
        normalised = normalise(text)
        all_words = words(normalised)
        sentences = split_sentences(text)
        norm_sentences = [normalise(s) for s in sentences]
        sentence_words = np.fromiter((len(words(s)) for s in norm_sentences), np.int64)

    # Exact repeats first: every later copy of a sentence is redundant without scoring.
    first_index: dict[str, int] = {}
    rep_of = np.fromiter(
        (first_index.setdefault(s, i) for i, s in enumerate(norm_sentences)), np.int64
    )
    redundant = rep_of != np.arange(len(norm_sentences))
    copies = np.flatnonzero(redundant)  # exact repeats of an earlier sentence
    reps = np.flatnonzero(~redundant)  # first occurrences, in text order

    distinct = [norm_sentences[i] for i in reps]
    estimate = pairs_seconds(algorithm, [len(x) for x in distinct], wide=is_wide(normalised))
    check_work(estimate, max_seconds, f"comparing the {len(distinct):,} distinct sentences")
    near_count = 0
    best = PairArrays.empty()  # the MAX_REPORTED best pairs so far, by sentence index
    with phase(CDIST):
        # block by block: similar sentences can have millions of pairs, of which only the
        # count, the redundant sentences and the best few are kept
        blocks = iter_pairs(distinct, None, scorer, threshold, ANALYSIS_BLOCK, workers)
        for found in blocks:
            # reps are in text order, so in each pair (left < right) the right is the later
            redundant[reps[found.right]] = True
            near_count += len(found)
            mapped = PairArrays(reps[found.left], reps[found.right], found.scores / 100.0)
            best = _best_pairs(PairArrays.concat([best, mapped]))

    exact_pairs = [(int(rep_of[i]), int(i), 1.0) for i in copies[:MAX_REPORTED]]
    near_pairs = [
        (int(a), int(b), float(s))
        for a, b, s in zip(best.left, best.right, best.scores, strict=True)
    ]
    listed = sorted(exact_pairs + near_pairs, key=lambda p: (-p[2], p[0], p[1]))[:MAX_REPORTED]

    word_count = len(all_words)
    unique = len(set(all_words))
    redundant_words = int(sentence_words[redundant].sum())
    score = redundant_words / word_count if word_count else 0.0
    return AnalysisResult(
        content_hash=hash_normalised(normalised),
        character_count=len(text),
        word_count=word_count,
        unique_words=unique,
        sentence_count=len(sentences),
        lexical_redundancy=1.0 - unique / word_count if word_count else 0.0,
        redundant_sentence_count=int(redundant.sum()),
        redundant_word_count=redundant_words,
        redundancy_score=score,
        redundancy_level=redundancy_level(score),
        near_duplicate_pair_count=copies.size + near_count,
        near_duplicate_sentences=[
            SentencePair(a=a, b=b, score=s, text_a=_snip(sentences[a]), text_b=_snip(sentences[b]))
            for a, b, s in listed
        ],
        repeated_phrases=repeated_phrases(all_words),
        threshold=threshold,
        algorithm=algorithm,
        version=ANALYSIS_VERSION,
    )


def repeated_phrases(
    tokens: list[str], n: int = PHRASE_LENGTH, top: int = MAX_REPORTED
) -> list[RepeatedPhrase]:
    """The ``top`` most frequent word n-grams that occur at least twice."""
    grams = Counter(zip(*(tokens[i:] for i in range(n)), strict=False))
    return [
        RepeatedPhrase(phrase=" ".join(gram), count=count)
        for gram, count in grams.most_common(top)
        if count >= 2
    ]


def _best_pairs(pairs: PairArrays) -> PairArrays:
    """The MAX_REPORTED pairs first by (score descending, a, b), without sorting them all
    (the same choice however the pairs are split into blocks)."""
    if len(pairs) > MAX_REPORTED:
        keep = np.argpartition(-pairs.scores, MAX_REPORTED - 1)[:MAX_REPORTED]
        floor = pairs.scores[keep].min()  # ties at the floor are settled by position below
        candidates = np.flatnonzero(pairs.scores >= floor)
        left, right = pairs.left[candidates], pairs.right[candidates]
        order = np.lexsort((right, left, -pairs.scores[candidates]))
        keep = candidates[order[:MAX_REPORTED]]
        pairs = PairArrays(pairs.left[keep], pairs.right[keep], pairs.scores[keep])
    return pairs


def _snip(sentence: str) -> str:
    return sentence if len(sentence) <= MAX_SNIPPET else sentence[: MAX_SNIPPET - 1] + "\u2026"
