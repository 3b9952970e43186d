"""Indexed near-duplicate search of a batch, spread over the workers in three phases.

    1. lsh_sign(chunk)       band keys of one chunk's documents, split by key into
                             partitions                   -> job store (binary tables)
    2. lsh_bucket(partition) documents sharing a band key -> candidate pairs, filed by the
                             chunk of their lower position -> job store
    3. lsh_verify(chunk)     candidate pairs of one chunk checked exactly (bounds, then
                             rapidfuzz)                   -> pairs, into merge_batch

Identical texts are searched once, as in-process: a bucket keeps the first copy of each
text, and merge_batch reports the copies as duplicate groups (``core.duplicates``).

Every task holds a bounded amount: one chunk of documents (1, 3 in slices of
``LSH_VERIFY_PAIRS`` candidate pairs) or one partition of band records (2, about
``LSH_BUCKET_RECORDS``). Tables live in Redis hashes keyed by chunk or partition, so a
redelivered task overwrites its own field instead of adding to it. The arithmetic is
``redundancy.core.lsh_tables``; these tasks only load, call it and store.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from redundancy import keys, names
from redundancy.batch.staging import (
    advance_progress,
    comparable_documents,
    load_chunk,
    load_positions,
)
from redundancy.batch.store import get_job_store
from redundancy.config import get_settings
from redundancy.core.lsh import LSHParams
from redundancy.core.lsh_tables import (
    PAIR,
    bucket_candidates,
    bucket_records,
    partition_count,
    partition_tables,
    unpack_pairs,
    verify_candidates,
)
from redundancy.core.neardup import distinct_documents
from redundancy.workers import app


def lsh_plan(count: int, threshold: float) -> tuple[LSHParams, int]:
    """LSH parameters and bucket partitions of an indexed batch of ``count`` documents
    (the canvas that writes the tables and the merge that deletes them agree on them)."""
    params = LSHParams.for_threshold(threshold, count)
    return params, partition_count(count, params, get_settings().lsh_bucket_records)


@app.task(name=names.BATCH_LSH_SIGN)
def lsh_sign(
    batch_id: str,
    chunk: int,
    *,
    count: int,
    chunk_size: int,
    threshold: float,
    algorithm: str,
    lsh: dict[str, int],
    partitions: int,
) -> dict[str, Any]:
    """Band keys of one chunk, filed by partition (``key % partitions``)."""
    loaded = load_chunk(batch_id, chunk, chunk_size, count)
    docs = distinct_documents(comparable_documents(loaded, algorithm))  # copies: same keys
    if docs:
        tables = partition_tables(docs, algorithm, LSHParams(**lsh), partitions)
        get_job_store().put_blobs(
            {
                keys.batch_lsh_partition(batch_id, p): {str(chunk): table.tobytes()}
                for p, table in enumerate(tables)
            },
            get_settings().batch_ttl,
        )
    advance_progress(batch_id)
    return {"kind": "lsh_sign", "chunk": chunk, "documents": len(docs)}


@app.task(name=names.BATCH_LSH_BUCKET)
def lsh_bucket(
    batch_id: str,
    partition: int,
    *,
    count: int,
    chunk_size: int,
    threshold: float,
    algorithm: str,
) -> dict[str, Any]:
    """Candidate pairs of one partition (documents sharing a band key), by chunk."""
    store = get_job_store()
    records = bucket_records(store.get_blobs(keys.batch_lsh_partition(batch_id, partition)))
    found = bucket_candidates(records, chunk_size)
    store.put_blobs(
        {
            keys.batch_lsh_candidates(batch_id, chunk): {str(partition): pairs.tobytes()}
            for chunk, pairs in found.items()
        },
        get_settings().batch_ttl,
    )
    advance_progress(batch_id)
    candidates = sum(pairs.size for pairs in found.values())
    return {"kind": "lsh_bucket", "partition": partition, "candidates": candidates}


@app.task(name=names.BATCH_LSH_VERIFY)
def lsh_verify(
    batch_id: str,
    chunk: int,
    *,
    count: int,
    chunk_size: int,
    threshold: float,
    algorithm: str,
) -> dict[str, Any]:
    """Exact check of the candidate pairs whose lower position is in ``chunk``."""
    settings = get_settings()
    blobs = get_job_store().get_blobs(keys.batch_lsh_candidates(batch_id, chunk))
    low, high = unpack_pairs(np.frombuffer(b"".join(blobs), dtype=PAIR))
    out: list[list[Any]] = []
    step = settings.lsh_verify_pairs
    for s in range(0, low.size, step):
        a, b = low[s : s + step], high[s : s + step]
        loaded = load_positions(batch_id, np.union1d(a, b).tolist())
        docs = comparable_documents(loaded, algorithm)
        found = verify_candidates(a, b, docs, algorithm, threshold, workers=settings.cdist_workers)
        out += [list(pair) for pair in found]
    advance_progress(batch_id)
    return {"kind": "pairs", "left": chunk, "right": None, "pairs": out}
