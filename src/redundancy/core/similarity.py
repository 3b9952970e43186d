"""Similarity of two texts with a chosen rapidfuzz scorer."""

from __future__ import annotations

from typing import Final

from redundancy.core.models import SimilarityResult
from redundancy.core.scorers import (
    DEFAULT_ALGORITHM,
    DEFAULT_THRESHOLD,
    get_scorer,
    is_similar,
    validate_threshold,
)
from redundancy.core.text import DEFAULT_MAX_CHARS, hash_normalised, normalise, validate_text, words

SIMILARITY_VERSION: Final = 1


def similarity(
    text_a: str,
    text_b: str,
    algorithm: str = DEFAULT_ALGORITHM,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> SimilarityResult:
    """Score the normalised texts (0..1); ``is_similar`` when the score >= ``threshold``."""
    validate_text(text_a, max_chars=max_chars, name="text_a")
    validate_text(text_b, max_chars=max_chars, name="text_b")
    threshold = validate_threshold(threshold)
    scorer = get_scorer(algorithm)
    norm_a, norm_b = normalise(text_a), normalise(text_b)
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
