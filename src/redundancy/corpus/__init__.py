"""Persistent corpora: every new document checked against everything indexed before.

    from redundancy.corpus import create_corpus, index_documents, find_similar
    create_corpus("news", threshold=0.8)
    index_documents("news", [{"id": "a1", "text": "..."}])
    find_similar("news", "a new text", limit=5).matches

A corpus is event-sourced (``redundancy.corpus.service``): commands append domain events
to its store (``redundancy.corpus.store``) and the index (``redundancy.corpus.index``) is
their projection. The same operations run as Celery tasks (``redundancy.tasks.corpus``)
and from the ``crd corpus`` command. Corpora need Redis (``CORPUS_REDIS_URL`` or
``REDIS_URL``; a Redis Cluster works as well).
"""

from __future__ import annotations

from typing import Any

from redundancy.corpus.service import (
    POLICIES,
    CheckResult,
    Corpus,
    CorpusBusyError,
    CorpusExistsError,
    IndexSummary,
    SimilarResult,
    UnknownCorpusError,
    create_corpus,
    get_corpus,
    list_corpora,
)


def index_documents(corpus: str, items: Any, **options: Any) -> IndexSummary:
    """Add or replace documents (``{"id", "text"}`` or plain texts) by id."""
    return get_corpus(corpus).index_documents(items, **options)


def remove_documents(corpus: str, ids: Any, **options: Any) -> IndexSummary:
    return get_corpus(corpus).remove_documents(ids, **options)


def find_similar(
    corpus: str,
    text: Any,
    threshold: float | None = None,
    limit: int = 20,
    mode: str = "indexed",
) -> SimilarResult:
    """Indexed documents with score >= threshold, verified, best first (mode: indexed or
    exact; exact guarantees recall 1.0)."""
    return get_corpus(corpus).find_similar(text, threshold, limit, mode)


def check_and_index(corpus: str, item: Any, policy: str = "index", **options: Any) -> CheckResult:
    """Near-duplicates of ``item`` among earlier documents, then index it unless
    ``policy`` ("index", "reject", "reject-exact") rejects it."""
    return get_corpus(corpus).check_and_index(item, policy, **options)


__all__ = [
    "POLICIES",
    "CheckResult",
    "Corpus",
    "CorpusBusyError",
    "CorpusExistsError",
    "IndexSummary",
    "SimilarResult",
    "UnknownCorpusError",
    "check_and_index",
    "create_corpus",
    "find_similar",
    "get_corpus",
    "index_documents",
    "list_corpora",
    "remove_documents",
]
