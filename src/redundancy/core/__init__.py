"""The pure domain: normalise, hash, analyse, compare, find near duplicates.

No I/O and no Celery, Redis or Kafka imports here (a unit test enforces it), so the same
code runs in a worker, in the embedded default and in a notebook.

The names below are the core's public face: the computations, their results and their
choices. Everything else (the search engines, bounds, LSH tables, scorer table, result
sub-models) is imported from its module, e.g. ``redundancy.core.lsh.LSHParams``.
"""

from __future__ import annotations

from redundancy.core.analysis import ANALYSIS_VERSION, analyze
from redundancy.core.models import (
    AnalysisResult,
    BatchItemResult,
    BatchResult,
    ItemError,
    NearDuplicateResult,
    SearchMode,
    SimilarityResult,
)
from redundancy.core.neardup import AUTO_INDEXED_FROM, MODES, near_duplicates
from redundancy.core.scorers import DEFAULT_ALGORITHM, DEFAULT_THRESHOLD, SCORERS
from redundancy.core.similarity import SIMILARITY_VERSION, similarity
from redundancy.core.text import content_hash, normalise

__all__ = [
    "ANALYSIS_VERSION",
    "AUTO_INDEXED_FROM",
    "DEFAULT_ALGORITHM",
    "DEFAULT_THRESHOLD",
    "MODES",
    "SCORERS",
    "SIMILARITY_VERSION",
    "AnalysisResult",
    "BatchItemResult",
    "BatchResult",
    "ItemError",
    "NearDuplicateResult",
    "SearchMode",
    "SimilarityResult",
    "analyze",
    "content_hash",
    "near_duplicates",
    "normalise",
    "similarity",
]
