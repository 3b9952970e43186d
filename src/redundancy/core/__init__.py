"""The pure domain: normalise, hash, analyse, compare, find near duplicates.

No I/O and no Celery, Redis or Kafka imports here (a unit test enforces it), so the same
code runs in a worker, in the embedded default and in a notebook.
"""

from __future__ import annotations

from redundancy.core.analysis import ANALYSIS_VERSION, analyze
from redundancy.core.bounds import bounds_apply, exact_pairs
from redundancy.core.clusters import connected_components
from redundancy.core.lsh import LSHParams, indexed_pairs
from redundancy.core.models import (
    AnalysisResult,
    BatchItemResult,
    BatchResult,
    DocumentPair,
    ItemError,
    NearDuplicateResult,
    RedundancyLevel,
    RepeatedPhrase,
    SearchMode,
    SentencePair,
    SimilarityResult,
    redundancy_level,
)
from redundancy.core.neardup import (
    AUTO_INDEXED_FROM,
    MODES,
    Document,
    assemble,
    expand_identical,
    near_duplicates,
    pairs_between,
    resolve_mode,
)
from redundancy.core.scorers import (
    DEFAULT_ALGORITHM,
    DEFAULT_THRESHOLD,
    SCORERS,
    get_scorer,
    is_similar,
    validate_threshold,
)
from redundancy.core.similarity import SIMILARITY_VERSION, similarity
from redundancy.core.text import (
    DEFAULT_MAX_CHARS,
    content_hash,
    normalise,
    split_sentences,
    validate_text,
    words,
)

__all__ = [
    "ANALYSIS_VERSION",
    "AUTO_INDEXED_FROM",
    "DEFAULT_ALGORITHM",
    "DEFAULT_MAX_CHARS",
    "DEFAULT_THRESHOLD",
    "MODES",
    "SCORERS",
    "SIMILARITY_VERSION",
    "AnalysisResult",
    "BatchItemResult",
    "BatchResult",
    "Document",
    "DocumentPair",
    "ItemError",
    "LSHParams",
    "NearDuplicateResult",
    "RedundancyLevel",
    "RepeatedPhrase",
    "SearchMode",
    "SentencePair",
    "SimilarityResult",
    "analyze",
    "assemble",
    "bounds_apply",
    "connected_components",
    "content_hash",
    "exact_pairs",
    "expand_identical",
    "get_scorer",
    "indexed_pairs",
    "is_similar",
    "near_duplicates",
    "normalise",
    "pairs_between",
    "redundancy_level",
    "resolve_mode",
    "similarity",
    "split_sentences",
    "validate_text",
    "validate_threshold",
    "words",
]
