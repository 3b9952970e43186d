"""What the results page shows, computed from a BatchResult: every list capped, so the page
of a 100,000-document batch stays as bounded as that of a small one.

Histograms count every pair; lists keep the top entries and say how many there are in all.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from redundancy.core.models import BatchResult, DocumentPair
from redundancy.report.charts import BarChart, bar_chart
from redundancy.report.diff import WordDiff, word_diff
from redundancy.schemas import validate  # the tasks' boundary, its messages

TOP_PAIRS = 100
"""Rows in the table of most similar pairs."""
COMPARED_PAIRS = 10
"""Pairs with a side-by-side view (each embedded: the page works offline)."""
MAX_DIFF_CHARS = 5_000
"""Characters of each document a side-by-side view compares and shows."""
TOP_CLUSTERS = 20
"""Largest clusters listed."""
CLUSTER_MEMBERS = 25
"""Members listed per cluster (best-connected first)."""
FAILED_ITEMS = 50
"""Failed items listed."""
MAX_ID_CHARS = 120
"""Longer document ids are shortened on the page (the JSONL output keeps them whole)."""
MAX_MESSAGE_CHARS = 300
"""Longer error messages are shortened on the page."""
SCORE_BINS = 20
"""Bins of the pair-score histogram, between the threshold and 1."""
CLUSTER_SIZE_BUCKETS: tuple[tuple[int, int | None], ...] = (
    (2, 2),
    (3, 3),
    (4, 4),
    (5, 5),
    (6, 10),
    (11, 20),
    (21, 50),
    (51, 100),
    (101, 1_000),
    (1_001, None),
)
"""Cluster sizes counted together (``None``: no upper end)."""


@dataclass(frozen=True)
class PairRow:
    rank: int
    id_a: str
    id_b: str
    score: float
    exact: bool
    cluster: int | None
    anchor: str | None
    """Fragment of this pair's side-by-side view, when the page has one."""


@dataclass(frozen=True)
class Comparison:
    anchor: str
    pair: PairRow
    diff: WordDiff | None
    missing: tuple[str, ...]
    """Ids of the documents whose text the caller did not supply."""


@dataclass(frozen=True)
class Member:
    id: str
    best: float
    """Its best score against another member of its cluster."""


@dataclass(frozen=True)
class ClusterRow:
    number: int
    """Its index in ``BatchResult.clusters`` (as in the JSONL and CSV outputs)."""
    size: int
    best: float
    weakest: float
    """Lowest score among the pairs that joined the cluster."""
    members: tuple[Member, ...]
    more: int


@dataclass(frozen=True)
class FailedRow:
    id: str
    type: str
    message: str


@dataclass(frozen=True)
class BatchPage:
    title: str
    batch: BatchResult
    exact_pairs: int
    clustered_documents: int
    score_chart: BarChart
    size_chart: BarChart
    pairs: tuple[PairRow, ...]
    clusters: tuple[ClusterRow, ...]
    comparisons: tuple[Comparison, ...]
    texts_available: bool
    failed: tuple[FailedRow, ...]
    max_diff_chars: int = MAX_DIFF_CHARS


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rank_key(pair: DocumentPair) -> tuple[float, int, int]:
    """Higher score first, then input order."""
    return (pair.score, -pair.a, -pair.b)


def compared_pairs(batch: BatchResult) -> list[DocumentPair]:
    """The pairs with a side-by-side view: the best-scoring ones that are not exact copies
    (identical texts have nothing to highlight), filled up with exact copies."""
    near = heapq.nlargest(COMPARED_PAIRS, (p for p in batch.pairs if not p.exact), key=_rank_key)
    if len(near) < COMPARED_PAIRS:
        exact = (p for p in batch.pairs if p.exact)
        near += heapq.nlargest(COMPARED_PAIRS - len(near), exact, key=_rank_key)
    return near


def as_batch_result(batch: Mapping[str, Any] | BatchResult) -> BatchResult:
    """The caller's dict as a BatchResult, or InvalidInputError naming every problem."""
    if isinstance(batch, BatchResult):
        return batch
    return validate(BatchResult, **batch)


def compared_ids(batch: Mapping[str, Any] | BatchResult) -> list[str]:
    """The documents whose texts the side-by-side views show: a server fetches only these."""
    pairs = compared_pairs(as_batch_result(batch))
    return list(dict.fromkeys(i for p in pairs for i in (p.id_a, p.id_b)))


def score_histogram(scores: Sequence[float], threshold: float) -> list[tuple[str, int]]:
    """Counts of every pair score in ``SCORE_BINS`` equal bins from the threshold to 1."""
    low = min(threshold, min(scores, default=threshold))
    if low >= 1.0:
        return [("1.00", len(scores))]
    counts, edges = np.histogram(np.asarray(scores, dtype=float), bins=SCORE_BINS, range=(low, 1))
    return [(f"{edges[n]:.3f}", int(c)) for n, c in enumerate(counts)]


def size_distribution(clusters: Iterable[Sequence[str]]) -> list[tuple[str, int]]:
    """Clusters per size bucket, up to the largest bucket in use."""
    counts = [0] * len(CLUSTER_SIZE_BUCKETS)
    for members in clusters:
        for n, (low, high) in enumerate(CLUSTER_SIZE_BUCKETS):
            if len(members) >= low and (high is None or len(members) <= high):
                counts[n] += 1
                break
    used = max((n for n, c in enumerate(counts) if c), default=0) + 1
    return [(_bucket_label(*CLUSTER_SIZE_BUCKETS[n]), counts[n]) for n in range(used)]


def _bucket_label(low: int, high: int | None) -> str:
    if high is None:
        return f"{low:,}+"
    return f"{low:,}" if low == high else f"{low:,}\N{EN DASH}{high:,}"


def _largest_clusters(batch: BatchResult) -> list[ClusterRow]:
    ranked = heapq.nsmallest(
        TOP_CLUSTERS, range(len(batch.clusters)), key=lambda n: (-len(batch.clusters[n]), n)
    )
    cluster_of = {doc: n for n in ranked for doc in batch.clusters[n]}
    best_of: dict[str, float] = {}
    scores: dict[int, list[float]] = {n: [] for n in ranked}
    for p in batch.pairs:
        n = cluster_of.get(p.id_a)
        if n is None:
            continue
        scores[n].append(p.score)
        for doc in (p.id_a, p.id_b):
            best_of[doc] = max(best_of.get(doc, 0.0), p.score)
    rows = []
    for n in ranked:
        members = sorted(batch.clusters[n], key=lambda d: -best_of.get(d, 0.0))
        rows.append(
            ClusterRow(
                number=n,
                size=len(members),
                best=max(scores[n], default=0.0),
                weakest=min(scores[n], default=0.0),
                members=tuple(
                    Member(shorten(d, MAX_ID_CHARS), best_of.get(d, 0.0))
                    for d in members[:CLUSTER_MEMBERS]
                ),
                more=max(len(members) - CLUSTER_MEMBERS, 0),
            )
        )
    return rows


def build_page(batch: BatchResult, texts: Mapping[str, str] | None, title: str | None) -> BatchPage:
    cluster_of = {doc: n for n, members in enumerate(batch.clusters) for doc in members}
    compared = compared_pairs(batch)
    anchor_of = {(p.a, p.b): f"pair-{n + 1}" for n, p in enumerate(compared)}

    def row(rank: int, p: DocumentPair) -> PairRow:
        return PairRow(
            rank=rank,
            id_a=shorten(p.id_a, MAX_ID_CHARS),
            id_b=shorten(p.id_b, MAX_ID_CHARS),
            score=p.score,
            exact=p.exact,
            cluster=cluster_of.get(p.id_a),
            anchor=anchor_of.get((p.a, p.b)),
        )

    comparisons = []
    for n, p in enumerate(compared):
        text_a = texts.get(p.id_a) if texts is not None else None
        text_b = texts.get(p.id_b) if texts is not None else None
        missing = tuple(
            shorten(doc, MAX_ID_CHARS)
            for doc, text in ((p.id_a, text_a), (p.id_b, text_b))
            if text is None
        )
        diff = (
            word_diff(text_a, text_b, MAX_DIFF_CHARS)
            if text_a is not None and text_b is not None
            else None
        )
        comparisons.append(Comparison(f"pair-{n + 1}", row(n + 1, p), diff, missing))

    top = heapq.nlargest(TOP_PAIRS, batch.pairs, key=_rank_key)
    failed = [item for item in batch.items if item.error is not None]
    return BatchPage(
        title=title or f"Near-duplicate report: batch {shorten(batch.batch_id, MAX_ID_CHARS)}",
        batch=batch,
        exact_pairs=sum(1 for p in batch.pairs if p.exact),
        clustered_documents=len(cluster_of),
        score_chart=bar_chart(
            score_histogram([p.score for p in batch.pairs], batch.threshold),
            x_label="similarity score (bin start)",
            y_label="pairs",
        ),
        size_chart=bar_chart(
            size_distribution(batch.clusters), x_label="cluster size", y_label="clusters"
        ),
        pairs=tuple(row(n + 1, p) for n, p in enumerate(top)),
        clusters=tuple(_largest_clusters(batch)),
        comparisons=tuple(comparisons),
        texts_available=texts is not None,
        failed=tuple(
            FailedRow(
                shorten(item.id, MAX_ID_CHARS),
                shorten(item.error.type, MAX_ID_CHARS),
                shorten(item.error.message, MAX_MESSAGE_CHARS),
            )
            for item in failed[:FAILED_ITEMS]
            if item.error is not None
        ),
    )
