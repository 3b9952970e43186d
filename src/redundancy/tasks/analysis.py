"""Single-text tasks: thin wrappers -- validate, compute in the core, return JSON."""

from __future__ import annotations

from typing import Any

from redundancy.config import get_settings
from redundancy.core import analyze, similarity
from redundancy.tasks.schemas import AnalyzeRequest, CompareRequest, validate
from redundancy.workers import app


@app.task(name="redundancy.analyze_content")
def analyze_content(text: str, threshold: float = 0.8, algorithm: str = "ratio") -> dict[str, Any]:
    """How much ``text`` repeats itself: an AnalysisResult as a JSON dict."""
    req = validate(AnalyzeRequest, text=text, threshold=threshold, algorithm=algorithm)
    settings = get_settings()
    result = analyze(
        req.text,
        req.threshold,
        algorithm=req.algorithm,
        max_chars=settings.max_text_chars,
        workers=settings.cdist_workers,
    )
    return result.model_dump(mode="json")


@app.task(name="redundancy.compare_texts")
def compare_texts(
    text_a: str, text_b: str, algorithm: str = "ratio", threshold: float = 0.8
) -> dict[str, Any]:
    """Similarity of two texts: a SimilarityResult as a JSON dict."""
    req = validate(
        CompareRequest, text_a=text_a, text_b=text_b, algorithm=algorithm, threshold=threshold
    )
    result = similarity(
        req.text_a,
        req.text_b,
        req.algorithm,
        req.threshold,
        max_chars=get_settings().max_text_chars,
    )
    return result.model_dump(mode="json")
