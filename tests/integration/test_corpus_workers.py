"""Bulk indexing as Celery chunks on real workers, against a serial run of the same chunks."""

from __future__ import annotations

import json

import pytest
from benchmarks.corpora import synthetic_corpus

from redundancy.corpus import create_corpus
from redundancy.corpus.service import Corpus
from tests.integration.test_corpus import assert_consistent

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS = synthetic_corpus(900, seed=41, copy_share=0.15)
ITEMS = [{"id": i, "text": t} for i, t in zip(DOCS.ids, DOCS.texts, strict=True)]
STEP, WIDTH = 60, 120
CHUNKS = [ITEMS[start : start + WIDTH] for start in range(0, len(ITEMS), STEP)]
"""Chunks of 120 documents every 60: every document is sent in two chunks."""


def logical(corpus: Corpus) -> tuple[dict[str, str], dict[int, list[str]]]:
    """Documents and band entries by document id (slots depend on arrival order)."""
    docs: dict[str, str] = {}
    bands: dict[int, list[str]] = {}
    for shard in range(corpus.config.shards):
        snap = corpus.index.snapshot(shard)
        for doc_id, text in snap["docs"].values():
            docs[doc_id] = text
        for field, slots in snap["bands"].items():
            bands.setdefault(field, []).extend(snap["docs"][s][0] for s in slots)
    return docs, {f: sorted(ids) for f, ids in bands.items()}


def test_two_workers_indexing_overlapping_chunks_end_with_the_serial_index(
    redis_cluster, corpus_redis_url
):
    # Given a corpus, and the same corpus indexed serially, chunk after chunk
    parallel = create_corpus("parallel", threshold=0.8, shards=4)
    serial = create_corpus("serial", threshold=0.8, shards=4)
    for chunk in CHUNKS:
        serial.index_documents(chunk)
    env = {"CORPUS_REDIS_URL": corpus_redis_url}
    workers = [redis_cluster.start_worker(concurrency=2, **env) for _ in range(2)]

    # When every chunk goes to two workers of 2 processes each at once
    (redis_cluster.tmp / "chunks.json").write_text(json.dumps(CHUNKS))
    out = redis_cluster.producer(
        """
        import json
        from celery import group
        from redundancy.tasks import index_documents
        chunks = json.load(open("chunks.json"))
        results = group(index_documents.s("parallel", c) for c in chunks).apply_async()
        print(json.dumps(results.get(timeout=300)))
        """,
        timeout=360,
        **env,
    )

    # Then every document was indexed once and seen once more as unchanged
    assert sum(s["indexed"] for s in out) == len(ITEMS)
    assert sum(s["unchanged"] for s in out) == sum(len(c) for c in CHUNKS) - len(ITEMS)
    # and the store holds one event per document, like the serial run's
    assert parallel.stats()["events"] == serial.stats()["events"] == len(ITEMS)
    # and the index equals the serial one (documents and every band entry) ...
    assert logical(parallel) == logical(serial)
    assert assert_consistent(parallel) == assert_consistent(serial)
    # ... and both workers took chunks
    for worker in workers:
        assert "Task redundancy.corpus.index_documents[" in worker.text()
