"""Corpus tasks: thin wrappers over ``redundancy.corpus`` (validate -> command -> JSON).

Bulk indexing is these tasks over chunks, on any number of workers: each chunk's events
are appended and projected shard by shard with compare-and-set, so concurrent chunks on
one shard serialise there and never apply an event twice (``redundancy.corpus.service``).
"""

from __future__ import annotations

from typing import Any

from redundancy import names
from redundancy.corpus import get_corpus
from redundancy.corpus.service import dump
from redundancy.correlation import correlation_id_of
from redundancy.workers import app


@app.task(name=names.CORPUS_INDEX, bind=True)
def index_documents(
    self: Any, corpus: str, items: list[Any], owner: str | None = None
) -> dict[str, Any]:
    """Add or replace documents by id: an IndexSummary as a JSON dict. ``owner`` (the
    HTTP API's jobs): the corpus must still be that user's when the task runs -- one
    dropped and made again by another user meanwhile is not."""
    found = get_corpus(corpus, owner=owner)
    return dump(found.index_documents(items, correlation_id=correlation_id_of(self.request)))


@app.task(name=names.CORPUS_REMOVE, bind=True)
def remove_documents(
    self: Any, corpus: str, ids: list[str], owner: str | None = None
) -> dict[str, Any]:
    found = get_corpus(corpus, owner=owner)
    return dump(found.remove_documents(ids, correlation_id=correlation_id_of(self.request)))


@app.task(name=names.CORPUS_FIND_SIMILAR)
def find_similar(
    corpus: str,
    text: str,
    threshold: float | None = None,
    limit: int = 20,
    mode: str = "indexed",
) -> dict[str, Any]:
    """Verified near-duplicates of ``text`` in the corpus: a SimilarResult as a JSON dict."""
    return dump(get_corpus(corpus).find_similar(text, threshold, limit, mode))


@app.task(name=names.CORPUS_CHECK_AND_INDEX, bind=True)
def check_and_index(
    self: Any,
    corpus: str,
    item: Any,
    policy: str = "index",
    threshold: float | None = None,
    limit: int = 20,
    mode: str = "indexed",
) -> dict[str, Any]:
    """Matches among earlier documents, then index unless the policy rejects: a
    CheckResult as a JSON dict."""
    result = get_corpus(corpus).check_and_index(
        item,
        policy,
        threshold=threshold,
        limit=limit,
        mode=mode,
        correlation_id=correlation_id_of(self.request),
    )
    return dump(result)
