"""What a comparison costs before it runs: a worst-case model, and the limits built on it.

rapidfuzz scores in native code that no soft time limit can interrupt, so the work is
bounded *before* it starts. The model is the cost of rapidfuzz's algorithms, fitted
(rounded up) to the worst cases measured on the 2-core reference machine
(``benchmarks/input_cost.py``; README "Bounded work per input"):

* ``ratio``, ``token_sort_ratio``, ``token_set_ratio`` compute an LCS bit-parallel: texts
  of ``m <= n`` characters cost ``ceil(m / 64) * n`` machine-word operations, about 10x
  dearer when a text holds a character above U+00FF (rapidfuzz then looks characters up
  in a hash map). ``token_set_ratio`` runs up to three such alignments.
* ``partial_ratio`` slides the shorter text along the longer one: about ``m^2 * n / 64``,
  so tens of KB take minutes. ``WRatio`` runs four ratios and, when one text is 1.5x
  longer than the other, two partial ratios.
* every scored pair has a fixed cost, which dominates short sentences, and the token
  scorers split (and sort) both texts for every pair: ``SCORER_COSTS``.
* everything else (normalising, splitting, words, phrases, hashing) is linear:
  ``CHAR_SECONDS`` and ``CHAR_BYTES`` per normalised character.

Two limits follow: a text compared as a whole by ``partial_ratio`` or ``WRatio`` has at
most ``PARTIAL_MAX_CHARS`` characters (a corpus of such texts still costs n^2 pairs);
and one analysis or comparison may cost at most ``max_seconds`` by this model
(``MAX_WORK_SECONDS``), else it is refused with ``WorkLimitError`` before any scoring.
The estimates are also what a task's time limit can be derived from (``worst_case`` from
the length alone, ``estimate_analysis`` / ``estimate_comparison`` from the text), and the
budgets the hostile-input tests hold every input to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from redundancy.core.text import normalise, split_sentences
from redundancy.errors import WorkLimitError

CALL_SECONDS: Final = 0.005
"""Fixed cost of one analysis or comparison (result models, set-up)."""
CHAR_SECONDS: Final = 2e-6
"""Linear work per normalised character (1,000,000 characters measured at 0.9-1.4 s)."""
CHAR_BYTES: Final = 48
"""Peak memory per normalised character of an analysis (33-38 bytes measured: the normal
form, sentences, words and phrases)."""
SEARCH_BYTES: Final = 16 * 2**20
"""Peak memory of the scoring itself, any input: one block of cdist scores and pairs."""
WORD_SECONDS_NARROW: Final = 2e-9
"""One machine-word step of an LCS over texts of code points <= U+00FF."""
WORD_SECONDS_WIDE: Final = 2.5e-8
"""The same step when a text holds a code point above U+00FF."""
PARTIAL_WORD_SECONDS: Final = 8e-9
"""One step of ``partial_ratio``'s ``m^2 * n / 64`` (any alphabet)."""
WRATIO_PARTIAL_FROM: Final = 1.5
"""Length ratio from which ``WRatio`` adds its partial alignments."""


@dataclass(frozen=True)
class ScorerCost:
    """The cost of one pair under one scorer: fixed, per character (splitting and sorting
    tokens, done per pair), and how many LCS and partial alignments it runs."""

    pair: float
    per_char: float
    alignments: int
    partials: int


SCORER_COSTS: Final = {
    "ratio": ScorerCost(pair=5e-8, per_char=0.0, alignments=1, partials=0),
    "token_sort_ratio": ScorerCost(pair=1e-7, per_char=1e-8, alignments=1, partials=0),
    "token_set_ratio": ScorerCost(pair=2.5e-7, per_char=2.5e-8, alignments=3, partials=0),
    "partial_ratio": ScorerCost(pair=2e-7, per_char=0.0, alignments=0, partials=1),
    "WRatio": ScorerCost(pair=4e-7, per_char=3e-8, alignments=5, partials=2),
}
"""Fitted, rounded up, to rapidfuzz's ``cdist`` on 4-, 30- and 100-character sentences
and to single pairs up to 100,000 characters (WRatio: ratio, token sort and set; two
partial alignments when one text is 1.5x longer)."""
PARTIAL_SCORERS: Final = ("partial_ratio", "WRatio")
"""Scorers whose cost grows with the cube of the text length."""
PARTIAL_MAX_CHARS: Final = 2_000
"""Longest text (normalised characters) ``partial_ratio`` or ``WRatio`` compares as a
whole: a pair of them costs at most about a second on the reference machine."""
DEFAULT_MAX_WORK_SECONDS: Final = 30.0
"""Estimated CPU seconds one analysis or comparison may cost (``MAX_WORK_SECONDS``)."""
TINY_SENTENCE: Final = 4
"""Characters of the shortest distinct sentences that fill a text most densely ("abc."
and a space); only ``worst_case`` uses it."""


def is_wide(text: str) -> bool:
    """True when ``text`` holds a code point above U+00FF (rapidfuzz's slower path)."""
    return not text.isascii() and max(text) > "\xff"


def pair_seconds(algorithm: str, m: int, n: int, *, wide: bool = True) -> float:
    """Estimated worst-case seconds to score one pair of texts of ``m`` and ``n``
    characters with ``algorithm`` (``wide``: either text is wide, see ``is_wide``)."""
    cost = SCORER_COSTS[algorithm]
    short, long_ = min(m, n), max(m, n)
    word = WORD_SECONDS_WIDE if wide else WORD_SECONDS_NARROW
    lcs = math.ceil(short / 64) * long_ * word
    partial = short * short * long_ / 64 * PARTIAL_WORD_SECONDS
    if algorithm == "WRatio" and not (short and long_ / short >= WRATIO_PARTIAL_FROM):
        partial = 0.0  # WRatio aligns partially only texts of skewed lengths
    return cost.pair + cost.per_char * (m + n) + cost.alignments * lcs + cost.partials * partial


def pairs_seconds(algorithm: str, lengths: Sequence[int], *, wide: bool = True) -> float:
    """Estimated worst-case seconds to score every pair of texts of ``lengths`` (an upper
    bound on the sum of ``pair_seconds``, computed in O(n log n) without visiting pairs).

    Uses ``ceil(m/64) * n <= m * n / 64 + n`` summed over pairs: ``sum m*n`` from the sum
    and sum of squares, ``sum max`` from the sorted lengths, ``sum (m + n)`` is
    ``(count - 1) * total``; partial alignments also bound ``m^2 * n <= m * n * longest``.
    """
    count = len(lengths)
    if count < 2:
        return 0.0
    cost = SCORER_COSTS[algorithm]
    ordered = sorted(lengths)
    total = sum(ordered)
    products = (total * total - sum(x * x for x in ordered)) / 2  # sum over pairs of m * n
    maxima = sum(x * i for i, x in enumerate(ordered))  # each length is the max of i pairs
    pairs = count * (count - 1) / 2
    word = WORD_SECONDS_WIDE if wide else WORD_SECONDS_NARROW
    lcs = (products / 64 + maxima) * word
    partial = products * ordered[-1] / 64 * PARTIAL_WORD_SECONDS
    per_char = cost.per_char * (count - 1) * total
    return pairs * cost.pair + per_char + cost.alignments * lcs + cost.partials * partial


def worst_case(chars: int, algorithm: str, max_seconds: float = DEFAULT_MAX_WORK_SECONDS) -> float:
    """The most an analysis or comparison of ``chars`` (normalised) characters may cost
    by the model: the linear work, plus scoring of the costliest shape for that length
    (two halves compared, or a text of tiny distinct sentences), which is never more than
    ``max_seconds`` (costlier work is refused). For a task's time limit, from the input
    size alone."""
    halves = pair_seconds(algorithm, chars // 2, chars - chars // 2)
    tiny = pairs_seconds(algorithm, [TINY_SENTENCE] * (chars // (TINY_SENTENCE + 1)))
    return CALL_SECONDS + CHAR_SECONDS * chars + min(max_seconds, max(halves, tiny))


def estimate_analysis(text: str, algorithm: str = "ratio") -> float:
    """Estimated worst-case CPU seconds of ``analyze(text, algorithm=...)`` on valid text:
    linear work plus comparing its distinct sentences (``analyze`` refuses the text when
    the comparison alone is over its limit)."""
    normalised = normalise(text)
    distinct = {normalise(s) for s in split_sentences(text)}
    search = pairs_seconds(algorithm, [len(s) for s in distinct], wide=is_wide(normalised))
    return CALL_SECONDS + CHAR_SECONDS * len(normalised) + search


def estimate_comparison(text_a: str, text_b: str, algorithm: str = "ratio") -> float:
    """Estimated worst-case CPU seconds of ``similarity(text_a, text_b, algorithm)``."""
    a, b = normalise(text_a), normalise(text_b)
    wide = is_wide(a) or is_wide(b)
    scoring = 0.0 if a == b else pair_seconds(algorithm, len(a), len(b), wide=wide)
    return CALL_SECONDS + CHAR_SECONDS * (len(a) + len(b)) + scoring


def check_work(estimate: float, max_seconds: float, what: str) -> None:
    """Refuse work estimated over ``max_seconds`` with a message saying what it is."""
    if estimate > max_seconds:
        raise WorkLimitError(
            f"{what} would cost about {estimate:,.0f} s of CPU, over the limit of "
            f"{max_seconds:g} s (MAX_WORK_SECONDS); split the text or use a cheaper scorer"
        )


def check_partial_length(normalised: str, algorithm: str, name: str) -> None:
    """Refuse a text too long for ``partial_ratio`` / ``WRatio`` to compare as a whole."""
    if algorithm in PARTIAL_SCORERS and len(normalised) > PARTIAL_MAX_CHARS:
        raise WorkLimitError(
            f"{name} has {len(normalised):,} characters; {algorithm} compares texts of at "
            f"most {PARTIAL_MAX_CHARS:,} (its cost grows with the cube of the length): use "
            "ratio, token_sort_ratio or token_set_ratio for longer texts"
        )
