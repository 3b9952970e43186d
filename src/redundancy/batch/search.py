"""Indexed near-duplicate search of a batch, spread over the workers in three phases.

    1. lsh_sign(chunk)       band keys of one chunk's documents, split by key into
                             partitions                   -> job store (binary tables)
    2. lsh_bucket(partition) documents sharing a band key -> candidate pairs, filed by the
                             chunk of their lower position -> job store
    3. lsh_verify(chunk)     candidate pairs of one chunk checked exactly (bounds, then
                             rapidfuzz)                   -> pairs, into merge_batch

Identical texts are searched once, as in-process: a bucket keeps the first copy of each
text, and merge_batch adds the pairs of the copies (``expand_identical``).

Every task holds a bounded amount: one chunk of documents (1, 3 in slices of
``LSH_VERIFY_PAIRS`` candidate pairs) or one partition of band records (2, about
``LSH_BUCKET_RECORDS``). Tables are raw little-endian numpy arrays in Redis hashes keyed by
chunk or partition, so a redelivered task overwrites its own field instead of adding to it.
The candidates equal those of ``indexed_pairs`` in-process with the same parameters
(identical texts have identical keys), and verification is exact, so a batch gives the
same pairs on any number of workers as in-process.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from redundancy import keys
from redundancy.batch.store import get_job_store
from redundancy.batch.tasks import advance_progress, load_chunk, load_positions
from redundancy.config import get_settings
from redundancy.core import LSHParams, normalise, validate_text
from redundancy.core.bounds import BoundPlan, prepare
from redundancy.core.lsh import band_keys, colliding_pairs, unique_pairs
from redundancy.core.text import hash_normalised
from redundancy.errors import InvalidInputError
from redundancy.workers import app
from redundancy.workers import routing as names

RECORD = np.dtype([("key", "<u8"), ("text", "<u8"), ("pos", "<u4")])
"""One band record: a band key, the first 8 bytes of the document's content hash, and its
position (20 bytes). Identical texts share every key *and* the hash, so a bucket keeps
one of them (the lowest position) and merge_batch pairs the copies back in: k copies of a
boilerplate text cost one record per band, not k(k-1)/2 candidate pairs."""

PAIR = np.dtype("<i8")
"""A candidate pair packed as ``low << 32 | high``."""


def partition_count(count: int, params: LSHParams) -> int:
    """Bucket tasks for ``count`` documents: each holds about LSH_BUCKET_RECORDS records."""
    records = count * params.bands
    return max(2, math.ceil(records / get_settings().lsh_bucket_records))


def _valid_texts(
    loaded: list[tuple[int, str, Any]], algorithm: str
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Positions, comparison-ready texts and content-hash prefixes of the loaded documents
    that are valid text (invalid ones are reported by analyze_chunk and never paired)."""
    settings = get_settings()
    positions, texts, hashes = [], [], []
    for position, _id, text in loaded:
        try:
            validate_text(text, max_chars=settings.max_text_chars)
        except InvalidInputError:
            continue
        norm = normalise(text)
        positions.append(position)
        texts.append(norm)
        hashes.append(int(hash_normalised(norm)[:16], 16))
    return (
        np.asarray(positions, dtype=np.int64),
        prepare(texts, algorithm),
        np.asarray(hashes, dtype=np.uint64),
    )


def first_copies(records: np.ndarray) -> np.ndarray:
    """One record per (band key, text): the lowest position among identical texts."""
    if records.size == 0:
        return records
    order = np.lexsort((records["pos"], records["text"], records["key"]))
    ordered = records[order]
    first = np.ones(ordered.size, dtype=bool)
    first[1:] = (ordered["key"][1:] != ordered["key"][:-1]) | (
        ordered["text"][1:] != ordered["text"][:-1]
    )
    return ordered[first]


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
    params = LSHParams(**lsh)
    loaded = load_chunk(batch_id, chunk, chunk_size, count)
    positions, texts, hashes = _valid_texts(loaded, algorithm)
    parts: list[list[np.ndarray]] = [[] for _ in range(partitions)]
    for round_ in range(params.rounds if texts else 0):
        found = band_keys(texts, params, round_)
        records = np.empty(found.size, dtype=RECORD)
        records["key"] = found.ravel()
        records["text"] = np.repeat(hashes, found.shape[1])
        records["pos"] = np.repeat(positions, found.shape[1])
        owner = records["key"] % np.uint64(partitions)
        order = np.argsort(owner, kind="stable")  # one sort, not a mask per partition
        bounds = np.searchsorted(owner[order], np.arange(1, partitions, dtype=np.uint64))
        for p, part in enumerate(np.split(records[order], bounds)):
            parts[p].append(part)
    tables = {
        keys.batch_lsh_partition(batch_id, p): {str(chunk): np.concatenate(parts[p]).tobytes()}
        for p in range(partitions)
        if parts[p]
    }
    get_job_store().put_blobs(tables, get_settings().batch_ttl)
    advance_progress(batch_id)
    return {"kind": "lsh_sign", "chunk": chunk, "documents": len(texts)}


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
    blobs = store.get_blobs(keys.batch_lsh_partition(batch_id, partition))
    records = first_copies(np.frombuffer(b"".join(blobs), dtype=RECORD))
    lo, hi = colliding_pairs(records["key"], records["pos"].astype(np.int64))
    packed = (lo << 32) | hi
    owner = lo // chunk_size  # sorted: unique pairs come ordered by their lower position
    chunks, starts = np.unique(owner, return_index=True)
    tables: dict[str, dict[str, bytes]] = {
        keys.batch_lsh_candidates(batch_id, int(chunk)): {
            str(partition): part.astype(PAIR).tobytes()
        }
        for chunk, part in zip(chunks, np.split(packed, starts[1:]), strict=True)
    }
    store.put_blobs(tables, get_settings().batch_ttl)
    advance_progress(batch_id)
    return {"kind": "lsh_bucket", "partition": partition, "candidates": int(lo.size)}


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
    store = get_job_store()
    blobs = store.get_blobs(keys.batch_lsh_candidates(batch_id, chunk))
    packed = np.frombuffer(b"".join(blobs), dtype=PAIR)
    lo, hi = unique_pairs(packed >> 32, packed & 0xFFFFFFFF)
    out: list[list[Any]] = []
    step = settings.lsh_verify_pairs
    for s in range(0, lo.size, step):
        a, b = lo[s : s + step], hi[s : s + step]
        needed = np.union1d(a, b)
        loaded = load_positions(batch_id, needed.tolist())
        positions, texts, _ = _valid_texts(loaded, algorithm)
        index = {int(p): i for i, p in enumerate(positions.tolist())}
        usable = np.fromiter(
            (int(x) in index and int(y) in index for x, y in zip(a, b, strict=True)),
            dtype=bool,
            count=a.size,
        )
        a, b = a[usable], b[usable]
        if a.size == 0:
            continue
        ia = np.fromiter((index[int(x)] for x in a), dtype=np.int64, count=a.size)
        ib = np.fromiter((index[int(x)] for x in b), dtype=np.int64, count=b.size)
        plan = BoundPlan.build(texts, threshold)
        feats = plan.features(texts)
        found = plan.verify(feats, feats, ia, ib, threshold, workers=settings.cdist_workers)
        out += [
            [int(positions[i]), int(positions[j]), score]
            for i, j, score in zip(
                found.left.tolist(), found.right.tolist(), found.scores.tolist(), strict=True
            )
        ]
    advance_progress(batch_id)
    return {"kind": "pairs", "left": chunk, "right": None, "pairs": out}
