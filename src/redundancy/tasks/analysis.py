"""Single-text tasks: thin wrappers -- validate, look up the results cache, compute in
the core, store, return JSON (see ``redundancy.cache.results`` for the keys)."""

from __future__ import annotations

from typing import Any

from redundancy.cache.overlap import early_key
from redundancy.cache.results import analysis_key, cached, similarity_key
from redundancy.config import get_settings
from redundancy.core import (
    DEFAULT_ALGORITHM,
    DEFAULT_THRESHOLD,
    AnalysisResult,
    SimilarityResult,
    analyze,
    similarity,
)
from redundancy.core.text import validate_text
from redundancy.schemas import AnalyzeRequest, CompareRequest, validate
from redundancy.workers import app
from redundancy.workers import routing as names


@app.task(name=names.ANALYZE_CONTENT)
def analyze_content(
    text: str, threshold: float = DEFAULT_THRESHOLD, algorithm: str = DEFAULT_ALGORITHM
) -> dict[str, Any]:
    """How much ``text`` repeats itself: an AnalysisResult as a JSON dict."""
    req = validate(AnalyzeRequest, text=text, threshold=threshold, algorithm=algorithm)
    settings = get_settings()
    validate_text(req.text, max_chars=settings.max_text_chars)  # bad input never costs I/O

    def compute() -> dict[str, Any]:
        result = analyze(
            req.text,
            req.threshold,
            algorithm=req.algorithm,
            max_chars=settings.max_text_chars,
            workers=settings.cdist_workers,
            max_seconds=settings.max_work_seconds,
        )
        return result.model_dump(mode="json")

    key = analysis_key(req.text, req.threshold, req.algorithm)
    return cached(key, compute, AnalysisResult, analyze_content.request)


@early_key(names.ANALYZE_CONTENT)
def _early_analysis_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The key ``analyze_content`` will look up, from its arguments as sent (before the
    body validates them: a key it does not ask for only costs the early lookup)."""
    text = args[0] if args else kwargs.get("text")
    threshold = args[1] if len(args) > 1 else kwargs.get("threshold", DEFAULT_THRESHOLD)
    algorithm = args[2] if len(args) > 2 else kwargs.get("algorithm", DEFAULT_ALGORITHM)
    if not (isinstance(text, str) and isinstance(algorithm, str)):
        return None
    if type(threshold) not in (int, float) or len(text) > get_settings().max_text_chars:
        return None
    return analysis_key(text, threshold, algorithm)


@app.task(name=names.COMPARE_TEXTS)
def compare_texts(
    text_a: str,
    text_b: str,
    algorithm: str = DEFAULT_ALGORITHM,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Similarity of two texts: a SimilarityResult as a JSON dict."""
    req = validate(
        CompareRequest, text_a=text_a, text_b=text_b, algorithm=algorithm, threshold=threshold
    )
    settings = get_settings()
    max_chars = settings.max_text_chars
    validate_text(req.text_a, max_chars=max_chars, name="text_a")
    validate_text(req.text_b, max_chars=max_chars, name="text_b")

    def compute() -> dict[str, Any]:
        result = similarity(
            req.text_a,
            req.text_b,
            req.algorithm,
            req.threshold,
            max_chars=max_chars,
            max_seconds=settings.max_work_seconds,
        )
        return result.model_dump(mode="json")

    key = similarity_key(req.text_a, req.text_b, req.threshold, req.algorithm)
    return cached(key, compute, SimilarityResult, compare_texts.request)
