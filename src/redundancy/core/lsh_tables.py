"""Indexed search in tables: the arithmetic of the three distributed LSH phases.

A batch's indexed search runs as tasks (``redundancy.batch.search``) that pass numpy
tables through the job store; everything those tasks compute lives here, as pure
functions over arrays, so a task only loads, calls and stores:

    sign    ``partition_tables``: band records of one chunk, split by key into partitions
    bucket  ``bucket_records``, ``bucket_candidates``: one partition's colliding first
            copies -> candidate pairs, filed by the chunk of their lower position
    verify  ``verify_candidates``: candidate pairs checked exactly (bounds, then rapidfuzz)

Tables are raw little-endian arrays (``RECORD``, ``PAIR``), never pickles. The
candidates equal those of ``indexed_pairs`` in-process with the same parameters
(identical texts have identical keys), and verification is exact, so a batch gives the
same pairs on any number of workers as in-process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from redundancy.core.bounds import BoundPlan, prepare
from redundancy.core.duplicates import ScoredPair
from redundancy.core.lsh import LSHParams, band_keys, colliding_pairs, unique_pairs
from redundancy.core.neardup import Document

RECORD = np.dtype([("key", "<u8"), ("text", "<u8"), ("pos", "<u4")])
"""One band record: a band key, the first 8 bytes of the document's content hash, and its
position (20 bytes). Identical texts share every key *and* the hash, so a bucket keeps
one of them (the lowest position) and the merge pairs the copies back in: k copies of a
boilerplate text cost one record per band, not k(k-1)/2 candidate pairs."""

PAIR = np.dtype("<i8")
"""A candidate pair packed as ``low << 32 | high``."""

MIN_PARTITIONS = 2


def partition_count(count: int, params: LSHParams, bucket_records: int) -> int:
    """Bucket tasks for ``count`` documents: each holds about ``bucket_records`` records."""
    return max(MIN_PARTITIONS, math.ceil(count * params.bands / bucket_records))


def comparable(
    docs: Sequence[Document], algorithm: str
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Positions, comparison-ready texts and content-hash prefixes (``RECORD["text"]``)."""
    return (
        np.fromiter((d.position for d in docs), dtype=np.int64, count=len(docs)),
        prepare([d.normalised for d in docs], algorithm),
        np.fromiter((int(d.content_hash[:16], 16) for d in docs), np.uint64, len(docs)),
    )


def partition_tables(
    docs: Sequence[Document], algorithm: str, params: LSHParams, partitions: int
) -> list[np.ndarray]:
    """``RECORD`` tables of every band of ``docs``, one per partition (``key % partitions``).

    A partition without records gets an empty table, so every partition of a chunk that
    has documents is written (and a redelivered task overwrites each of them).
    """
    positions, texts, hashes = comparable(docs, algorithm)
    parts: list[list[np.ndarray]] = [[] for _ in range(partitions)]
    for round_ in range(params.rounds if texts else 0):
        found = band_keys(texts, params, round_)
        records = np.empty(found.size, dtype=RECORD)
        records["key"] = found.ravel()
        records["text"] = np.repeat(hashes, found.shape[1])
        records["pos"] = np.repeat(positions, found.shape[1])
        owner = records["key"] % np.uint64(partitions)
        for p, part in enumerate(split_by(records, owner, partitions)):
            parts[p].append(part)
    return [np.concatenate(p) if p else np.empty(0, dtype=RECORD) for p in parts]


def split_by(rows: np.ndarray, owner: np.ndarray, parts: int) -> list[np.ndarray]:
    """``rows`` split into ``parts`` arrays by ``owner`` (0 .. parts - 1), with one stable
    sort rather than one mask per part."""
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(1, parts, dtype=owner.dtype))
    return np.split(rows[order], bounds)


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


def bucket_records(tables: Sequence[bytes]) -> np.ndarray:
    """One partition's ``RECORD`` tables (one per chunk) as one array of first copies.

    Taking the raw tables lets their joined copy go as soon as the first copies are
    picked: a bucket holds about ``LSH_BUCKET_RECORDS`` records, tens of MiB.
    """
    return first_copies(np.frombuffer(b"".join(tables), dtype=RECORD))


def bucket_candidates(records: np.ndarray, chunk_size: int) -> dict[int, np.ndarray]:
    """Candidate pairs of one partition (first copies sharing a band key, from
    ``bucket_records``), as ``PAIR`` tables keyed by the chunk of their lower position."""
    lo, hi = colliding_pairs(records["key"], records["pos"].astype(np.int64))
    if lo.size == 0:
        return {}
    packed = ((lo << 32) | hi).astype(PAIR)
    owner = lo // chunk_size  # sorted: unique pairs come ordered by their lower position
    chunks, starts = np.unique(owner, return_index=True)
    parts = np.split(packed, starts[1:])
    return {int(chunk): part for chunk, part in zip(chunks, parts, strict=True)}


def unpack_pairs(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ``(low, high)`` arrays of ``PAIR`` values (several tables joined)."""
    return unique_pairs(packed >> 32, packed & 0xFFFFFFFF)


def verify_candidates(
    low: np.ndarray,
    high: np.ndarray,
    docs: Sequence[Document],
    algorithm: str,
    threshold: float,
    *,
    workers: int = 1,
) -> list[ScoredPair]:
    """The candidate pairs ``(low[i], high[i])`` (positions) that score ``>= threshold``,
    with their exact scores; pairs with a position not in ``docs`` are skipped."""
    positions, texts, _ = comparable(docs, algorithm)
    if positions.size == 0 or low.size == 0:
        return []
    order = np.argsort(positions, kind="stable")
    ranked = positions[order]
    at_low = np.minimum(np.searchsorted(ranked, low), ranked.size - 1)
    at_high = np.minimum(np.searchsorted(ranked, high), ranked.size - 1)
    usable = (ranked[at_low] == low) & (ranked[at_high] == high)
    if not usable.any():
        return []
    ia, ib = order[at_low[usable]], order[at_high[usable]]
    plan = BoundPlan.build(texts, threshold)
    feats = plan.features(texts)
    found = plan.verify(feats, feats, ia, ib, threshold, workers=workers)
    return [
        (int(positions[i]), int(positions[j]), score)
        for i, j, score in zip(
            found.left.tolist(), found.right.tolist(), found.scores.tolist(), strict=True
        )
    ]
