"""Similarity of two texts with a chosen rapidfuzz scorer."""

from __future__ import annotations

from typing import Final

from redundancy.core.cost import (
    DEFAULT_MAX_WORK_SECONDS,
    check_partial_length,
    check_work,
    is_wide,
    pair_seconds,
)
from redundancy.core.duplicates import IDENTICAL_SCORE
from redundancy.core.models import SimilarityResult
from redundancy.core.scorers import (
    DEFAULT_ALGORITHM,
    DEFAULT_THRESHOLD,
    get_scorer,
    is_similar,
    validate_threshold,
)
from redundancy.core.text import DEFAULT_MAX_CHARS, hash_normalised, normalise, validate_text, words

SIMILARITY_VERSION: Final = 2
"""2: texts with runs of more than 30 combining marks hash in stream-safe form."""


def similarity(
    text_a: str,
    text_b: str,
    algorithm: str = DEFAULT_ALGORITHM,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    max_seconds: float = DEFAULT_MAX_WORK_SECONDS,
) -> SimilarityResult:
    """Score the normalised texts (0..1); ``is_similar`` when the score >= ``threshold``.

    Identical texts score 1.0 unscored. ``WorkLimitError`` refuses, before scoring, texts
    over ``PARTIAL_MAX_CHARS`` for the partial scorers and comparisons that would cost
    more than ``max_seconds`` (``redundancy.core.cost``).
    """
    validate_text(text_a, max_chars=max_chars, name="text_a")
    validate_text(text_b, max_chars=max_chars, name="text_b")
    threshold = validate_threshold(threshold)
    scorer = get_scorer(algorithm)
    norm_a, norm_b = normalise(text_a), normalise(text_b)
    if norm_a == norm_b:
        score = IDENTICAL_SCORE
    else:
        check_partial_length(norm_a, algorithm, "text_a")
        check_partial_length(norm_b, algorithm, "text_b")
        wide = is_wide(norm_a) or is_wide(norm_b)
        estimate = pair_seconds(algorithm, len(norm_a), len(norm_b), wide=wide)
        check_work(estimate, max_seconds, "comparing these texts")
        score = scorer(norm_a, norm_b, processor=None)
    return SimilarityResult(
        similarity_score=score / 100.0,
        is_similar=is_similar(score, threshold),
        threshold=threshold,
        algorithm=algorithm,
        common_words=len(set(words(norm_a)) & set(words(norm_b))),
        text1_hash=hash_normalised(norm_a),
        text2_hash=hash_normalised(norm_b),
        version=SIMILARITY_VERSION,
    )
