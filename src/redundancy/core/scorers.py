"""The rapidfuzz scorers users may choose, by their public names."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Final

from rapidfuzz import fuzz

from redundancy.errors import InvalidInputError

Scorer = Callable[..., float]

SCORERS: Final[dict[str, Scorer]] = {
    "ratio": fuzz.ratio,
    "partial_ratio": fuzz.partial_ratio,
    "token_sort_ratio": fuzz.token_sort_ratio,
    "token_set_ratio": fuzz.token_set_ratio,
    "WRatio": fuzz.WRatio,
}
DEFAULT_ALGORITHM: Final = "ratio"
DEFAULT_THRESHOLD: Final = 0.8
"""Similarity (0-1) from which two sentences or documents count as near-duplicates."""

MIN_THRESHOLD: Final = 0.01
"""Lowest accepted threshold: the uint8 pre-filter needs a cut-off of at least 0.5 points."""


def get_scorer(algorithm: str) -> Scorer:
    """The rapidfuzz scorer called ``algorithm``; a did-you-mean error otherwise."""
    try:
        return SCORERS[algorithm]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(algorithm), list(SCORERS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidInputError(
            f"unknown algorithm {algorithm!r}; choose one of {', '.join(SCORERS)}.{hint}"
        ) from None


def validate_threshold(threshold: Any) -> float:
    """A similarity threshold in [MIN_THRESHOLD, 1.0] (scores are 0..1)."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise InvalidInputError(f"threshold must be a number, got {type(threshold).__name__}")
    if not MIN_THRESHOLD <= threshold <= 1.0:
        raise InvalidInputError(
            f"threshold must be between {MIN_THRESHOLD} and 1.0, got {threshold}"
        )
    return float(threshold)


def is_similar(score_0_100: float, threshold: float) -> bool:
    """The one comparison used everywhere: rapidfuzz score / 100 >= threshold."""
    return score_0_100 / 100.0 >= threshold
