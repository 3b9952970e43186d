"""Exact near-duplicate search: prune with provable bounds, then score the survivors.

For the Indel-based ``ratio`` (rapidfuzz's ``fuzz.ratio``) the score of ``a`` and ``b`` is
``2 * LCS(a, b) / (|a| + |b|)``, where LCS is the longest common subsequence. So a pair can
reach threshold ``t`` only if ``LCS(a, b) >= t * (|a| + |b|) / 2`` (the *need*). Every
bound below is an upper bound on LCS; a pair whose bound is under the need is dropped
without ever being scored, and so no pair that brute force returns can be lost.

Bounds, cheapest first (each with its one-line proof):

1. **length**: ``LCS <= min(|a|, |b|)`` -- a common subsequence is a subsequence of both.
   Equivalently a pair is hopeless when ``||a| - |b|| > (1 - t)(|a| + |b|)``.
2. **character histogram**: ``LCS <= sum_c min(count_a(c), count_b(c))`` -- every matched
   position of a common subsequence pairs two equal characters, so at most
   ``min(count_a(c), count_b(c))`` matches use ``c``. Characters are counted in buckets
   (the most frequent characters alone, the rest shared); that bound is still valid because
   ``min(sum x, sum y) >= sum min(x, y)``.
3. **alphabet partition**: for any partition of the alphabet into groups ``S_1..S_k``,
   ``LCS(a, b) <= sum_g LCS(a|S_g, b|S_g)`` where ``a|S`` keeps only the characters of
   ``a`` that are in ``S`` -- the characters of one common subsequence that fall in
   ``S_g`` form a common subsequence of the two projections. The projections are ``k``
   times shorter, so their LCS costs about ``1/k`` of the full one, and unlike the
   histogram the bound keeps most of the order information (``k = 1`` is the exact LCS,
   one group per character is bound 2).

Bounds 1 and 2 are computed blockwise in numpy; bound 3 with rapidfuzz's bit-parallel
``LCSseq`` on the projections; survivors are scored with ``process.cpdist`` in float64,
which returns exactly what ``scorer(a, b)`` returns, so the result equals brute force
(same pairs, same scores). A float margin of ``1e-9`` keeps pairs whose bound only ties
the need within rounding.

Scorers: bounds hold for ``ratio`` and, on texts whose tokens are sorted first, for
``token_sort_ratio`` (which is ``ratio`` of the sorted-token strings). They do not hold
for ``partial_ratio``, ``token_set_ratio`` and ``WRatio`` (substring and set scores can
exceed what length and order allow), so those fall back to all-pairs.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import fuzz, process
from rapidfuzz.distance import LCSseq

from redundancy.core.pairs import PairArrays, find_pairs, uint8_cutoff
from redundancy.core.scorers import get_scorer

BOUNDED_SCORERS = ("ratio", "token_sort_ratio")
"""Scorers for which the bounds are proven (``token_sort_ratio`` via sorted tokens)."""

HISTOGRAM_BUCKETS = 48
"""Character-count buckets: the 47 most frequent characters alone, all others in one."""

PARTITION_CANDIDATES = (3, 4, 6, 8, 12)
"""Group counts tried for bound 3 on a sample; the cheapest expected one is used."""

PARTITION_COST = 0.6
"""Cost of bound 3 with k groups, relative to full scoring, is about PARTITION_COST / k
(measured on 1,500-character documents); used only to choose k, never for correctness."""

COUNT_DOCS = 2000
"""Documents whose characters rank the histogram buckets and balance the groups (a plan
only needs typical frequencies; characters never seen still get a bucket and a group)."""

SAMPLE_DOCS = 64
"""Documents sampled to choose k (their pairs are bounded once per candidate k)."""

HISTOGRAM_SLICE = 4096
"""Texts whose characters are counted in one numpy pass."""

TABLE_SIZE = 1 << 16
"""Code points looked up in a table; rarer ones are compared one by one."""

PAIR_SLICE = 1 << 16
"""Candidate pairs bounded at once (keeps the gathered histograms small)."""

DENSE_BLOCK = 0.2
"""Share of a block's pairs surviving bounds 1-2 above which bound 3 uses cdist."""

DEFAULT_EXACT_BLOCK = 1024
"""Rows and columns of one block of length and histogram bounds."""

MARGIN = 1e-9
"""Relative float margin: a pair is pruned only when its bound is clearly under the need."""


def bounds_apply(algorithm: str) -> bool:
    """True when the exact-mode bounds are valid for ``algorithm``."""
    return algorithm in BOUNDED_SCORERS


def prepare(texts: Sequence[str], algorithm: str) -> list[str]:
    """Texts in the form the bounds reason about (sorted tokens for token_sort_ratio)."""
    if algorithm == "token_sort_ratio":
        return [" ".join(sorted(t.split())) for t in texts]
    return list(texts)


@dataclass(frozen=True)
class BoundPlan:
    """How to compute bounds 2 and 3 for one comparison (any plan gives exact results;
    a good one prunes more)."""

    bucket_chars: str
    """Characters with their own histogram bucket; every other character shares the last."""
    groups: tuple[str, ...]
    """Alphabet partition for bound 3; empty when bound 3 is not worth its cost."""

    @classmethod
    def build(cls, texts: Sequence[str], threshold: float, seed: int = 0) -> BoundPlan:
        """A plan fitted to ``texts``: frequency-ranked buckets, and the group count whose
        bound is cheapest on a deterministic sample of pairs (or none)."""
        rng = random.Random(seed)
        counted = texts if len(texts) <= COUNT_DOCS else rng.sample(list(texts), COUNT_DOCS)
        counts: Counter[str] = Counter()
        for text in counted:
            counts.update(text)
        ranked = [c for c, _ in counts.most_common()]
        bucket_chars = "".join(ranked[: HISTOGRAM_BUCKETS - 1])
        sample = list(texts) if len(texts) <= SAMPLE_DOCS else rng.sample(list(texts), SAMPLE_DOCS)
        best: tuple[str, ...] = ()
        if len(sample) >= 2:
            plain = cls(bucket_chars, ())
            feats = plain.features(sample)
            ii, jj = np.triu_indices(len(sample), k=1)
            keep = plain._cheap_keep(feats, feats, ii, jj, threshold)
            ii, jj = ii[keep], jj[keep]
            best_cost = float(keep.mean()) if keep.size else 0.0  # no bound 3: score them all
            for k in PARTITION_CANDIDATES:
                if ii.size == 0:
                    break
                groups = partition_alphabet(counts, k)
                plan = cls(bucket_chars, groups)
                f = plan.features(sample)
                survive = plan._partition_keep(f, f, ii, jj, threshold, workers=1)
                cost = (PARTITION_COST / k) * ii.size / len(keep) + survive.sum() / len(keep)
                if cost < best_cost:
                    best, best_cost = groups, cost
        return cls(bucket_chars, best)

    def features(self, texts: Sequence[str]) -> Features:
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        hist = self._histograms(texts, lengths)
        projections: list[np.ndarray] = []
        if self.groups:
            alphabet = set().union(*map(set, texts)) if texts else set()
            for group in self._closed_groups(alphabet):
                drop = {ord(c): None for c in alphabet if c not in group}
                projections.append(np.asarray([t.translate(drop) for t in texts], dtype=object))
        return Features(np.asarray(texts, dtype=object), lengths, hist, projections)

    def _histograms(self, texts: Sequence[str], lengths: np.ndarray) -> np.ndarray:
        """Bucketed character counts, one row per text (vectorised over slices of texts)."""
        other = HISTOGRAM_BUCKETS - 1
        table = np.full(TABLE_SIZE, other, dtype=np.int64)  # code point -> bucket
        for bucket, char in enumerate(self.bucket_chars):
            if ord(char) < TABLE_SIZE:
                table[ord(char)] = bucket
        wide = {ord(c): b for b, c in enumerate(self.bucket_chars) if ord(c) >= TABLE_SIZE}
        hist = np.zeros((len(texts), HISTOGRAM_BUCKETS), dtype=np.int64)
        for s in range(0, len(texts), HISTOGRAM_SLICE):
            part = texts[s : s + HISTOGRAM_SLICE]
            cps = np.frombuffer("".join(part).encode("utf-32-le"), dtype="<u4")
            bucket = table[np.minimum(cps, TABLE_SIZE - 1)]
            bucket[cps >= TABLE_SIZE] = other
            for code, b in wide.items():  # rare: a frequent character beyond the table
                bucket[cps == code] = b
            rows = np.repeat(np.arange(len(part)), lengths[s : s + len(part)])
            hist[s : s + len(part)] = np.bincount(
                rows * HISTOGRAM_BUCKETS + bucket, minlength=len(part) * HISTOGRAM_BUCKETS
            ).reshape(len(part), HISTOGRAM_BUCKETS)
        return hist

    def _closed_groups(self, alphabet: set[str]) -> list[set[str]]:
        """The groups, with characters the plan never saw spread over them by code point
        (every character must be in exactly one group for bound 3)."""
        groups = [set(g) for g in self.groups]
        known = set().union(*groups)
        for char in sorted(alphabet - known):
            groups[ord(char) % len(groups)].add(char)
        return groups

    # -- the cascade -------------------------------------------------------------------

    def _cheap_keep(
        self, left: Features, right: Features, ii: np.ndarray, jj: np.ndarray, threshold: float
    ) -> np.ndarray:
        """Bounds 1 and 2 for the pairs ``(ii[n], jj[n])``, in numpy."""
        la, lb = left.lengths[ii], right.lengths[jj]
        need = _need(la, lb, threshold)
        keep: np.ndarray = np.minimum(la, lb) >= need  # bound 1
        if keep.any():
            sel = np.flatnonzero(keep)
            common = np.minimum(left.hist[ii[sel]], right.hist[jj[sel]]).sum(axis=1)  # bound 2
            keep[sel] = common >= need[sel]
        return keep

    def _partition_keep(
        self,
        left: Features,
        right: Features,
        ii: np.ndarray,
        jj: np.ndarray,
        threshold: float,
        *,
        workers: int,
    ) -> np.ndarray:
        """Bound 3 for the pairs ``(ii[n], jj[n])``: sum of LCS over the projections."""
        if not left.projections or ii.size == 0:
            return np.ones(ii.size, dtype=bool)
        total = np.zeros(ii.size, dtype=np.int64)
        for pl, pr in zip(left.projections, right.projections, strict=True):
            total += process.cpdist(
                pl[ii],
                pr[jj],
                scorer=LCSseq.similarity,
                processor=None,
                dtype=np.int32,
                workers=workers,
            )
        return total >= _need(left.lengths[ii], right.lengths[jj], threshold)

    def verify(
        self,
        left: Features,
        right: Features,
        ii: np.ndarray,
        jj: np.ndarray,
        threshold: float,
        *,
        workers: int = 1,
    ) -> PairArrays:
        """Candidate pairs ``(ii[n], jj[n])`` through bounds 1-3, then exact scores."""
        found: list[PairArrays] = []
        for s in range(0, ii.size, PAIR_SLICE):
            i, j = ii[s : s + PAIR_SLICE], jj[s : s + PAIR_SLICE]
            keep = self._cheap_keep(left, right, i, j, threshold)
            i, j = i[keep], j[keep]
            keep = self._partition_keep(left, right, i, j, threshold, workers=workers)
            i, j = i[keep], j[keep]
            if i.size:
                found.append(score_pairs(left.texts, right.texts, i, j, threshold, workers))
        return PairArrays.concat(found)

    def verify_block(
        self,
        left: Features,
        right: Features,
        rows: np.ndarray,
        cols: np.ndarray,
        threshold: float,
        *,
        allowed: np.ndarray | None = None,
        workers: int = 1,
    ) -> PairArrays:
        """Every pair of ``rows`` x ``cols`` (where ``allowed``) through bounds 1-3 as
        matrices, then exact scores. Dense survivors of bounds 1-2 get bound 3 with
        ``cdist`` (it reuses each row's bit vectors: ~4x cheaper per pair than cpdist)."""
        la = left.lengths[rows][:, None]
        lb = right.lengths[cols][None, :]
        need = _need(la, lb, threshold)
        keep = np.minimum(la, lb) >= need  # bound 1
        if allowed is not None:
            keep &= allowed
        ri, ci = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
        if ri.size == 0:
            return PairArrays.empty()
        sub = np.ix_(ri, ci)
        hl, hr = left.hist[rows[ri]], right.hist[cols[ci]]
        common = np.zeros((ri.size, ci.size), dtype=np.int64)
        for k in range(HISTOGRAM_BUCKETS):  # bound 2, one bucket at a time
            common += np.minimum(hl[:, k, None], hr[None, :, k])
        keep[sub] &= common >= need[sub]
        if self.groups and left.projections:
            ri, ci = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
            diagonal = rows is cols
            if diagonal:  # one index set for both sides: cdist then scores one triangle
                ri = ci = np.union1d(ri, ci)
            sub = np.ix_(ri, ci)
            if ri.size and keep[sub].mean() >= (DENSE_BLOCK / 2 if diagonal else DENSE_BLOCK):
                total = np.zeros((ri.size, ci.size), dtype=np.int64)
                for pl, pr in zip(left.projections, right.projections, strict=True):
                    queries = pl[rows[ri]]
                    choices = queries if diagonal else pr[cols[ci]]
                    total += process.cdist(
                        queries,
                        choices,
                        scorer=LCSseq.similarity,
                        processor=None,
                        dtype=np.int32,
                        workers=workers,
                    )
                keep[sub] &= total >= need[sub]
            elif ri.size:
                bi, bj = np.nonzero(keep)
                ok = self._partition_keep(
                    left, right, rows[bi], cols[bj], threshold, workers=workers
                )
                keep[bi[~ok], bj[~ok]] = False
        bi, bj = np.nonzero(keep)
        if bi.size == 0:
            return PairArrays.empty()
        return score_pairs(left.texts, right.texts, rows[bi], cols[bj], threshold, workers)


@dataclass(frozen=True)
class Features:
    """Per-document data the bounds need: texts, lengths, histograms, projections."""

    texts: np.ndarray
    lengths: np.ndarray
    hist: np.ndarray
    projections: list[np.ndarray]


def partition_alphabet(counts: Counter[str], k: int) -> tuple[str, ...]:
    """``k`` groups of about equal total frequency: each character, most frequent first,
    goes to the lightest group (so frequent characters are spread over the groups)."""
    groups: list[list[str]] = [[] for _ in range(k)]
    load = [0] * k
    for char, n in counts.most_common():
        g = min(range(k), key=load.__getitem__)
        groups[g].append(char)
        load[g] += n
    return tuple("".join(g) for g in groups if g)


def _need(la: np.ndarray, lb: np.ndarray, threshold: float) -> np.ndarray:
    """Smallest LCS (minus the float margin) with which ``ratio`` can reach ``threshold``."""
    total: np.ndarray = (la + lb).astype(np.float64)
    return threshold * total / 2.0 * (1.0 - MARGIN)


def score_pairs(
    left: np.ndarray,
    right: np.ndarray,
    ii: np.ndarray,
    jj: np.ndarray,
    threshold: float,
    workers: int = 1,
) -> PairArrays:
    """Exact float64 ``ratio`` of the pairs; those reaching ``threshold`` are kept.

    The integer ``score_cutoff`` (<= threshold) only lets rapidfuzz stop early on pairs
    that cannot reach it; the scores it returns for the others are the full scores.
    """
    scores = process.cpdist(
        left[ii],
        right[jj],
        scorer=fuzz.ratio,
        processor=None,
        score_cutoff=uint8_cutoff(threshold),
        dtype=np.float64,
        workers=workers,
    )
    keep = scores / 100.0 >= threshold
    return PairArrays(ii[keep].astype(np.int64), jj[keep].astype(np.int64), scores[keep])


def exact_pairs(
    rows: Sequence[str],
    columns: Sequence[str] | None = None,
    *,
    algorithm: str,
    threshold: float,
    block_size: int = DEFAULT_EXACT_BLOCK,
    workers: int = 1,
) -> PairArrays:
    """Exactly the pairs ``find_pairs`` returns (same scores), found by pruning first.

    With ``columns`` None: pairs ``i < j`` inside ``rows``; else every ``(i, j)`` across.
    Scorers without proven bounds fall back to ``find_pairs`` (all-pairs).
    """
    if not bounds_apply(algorithm):
        return find_pairs(
            rows, columns, scorer=get_scorer(algorithm), threshold=threshold, workers=workers
        )
    within = columns is None
    left_texts = prepare(rows, algorithm)
    right_texts = left_texts if columns is None else prepare(columns, algorithm)
    if not left_texts or not right_texts:
        return PairArrays.empty()
    plan = BoundPlan.build(left_texts if within else [*left_texts, *right_texts], threshold)
    left = plan.features(left_texts)
    right = left if within else plan.features(right_texts)
    # Sorting by length makes bound 1 skip whole blocks: rows of one block can only pair
    # with a contiguous range of columns.
    lorder = np.argsort(left.lengths, kind="stable")
    rorder = lorder if within else np.argsort(right.lengths, kind="stable")
    llen, rlen = left.lengths[lorder], right.lengths[rorder]
    found: list[PairArrays] = []
    for r0 in range(0, lorder.size, block_size):
        rows_idx = lorder[r0 : r0 + block_size]
        lo_len, hi_len = int(llen[r0]), int(llen[min(r0 + block_size, lorder.size) - 1])
        # partner lengths that bound 1 allows for any row of this block
        c_lo = int(np.searchsorted(rlen, lo_len * threshold / (2.0 - threshold) * (1 - MARGIN)))
        c_hi = int(
            np.searchsorted(
                rlen, hi_len * (2.0 - threshold) / threshold * (1 + MARGIN), side="right"
            )
        )
        start = max(c_lo, r0) if within else c_lo
        for c0 in range(start, c_hi, block_size):
            c1 = min(c0 + block_size, c_hi)
            cols_idx = rorder[c0:c1]
            allowed = None
            if within and c0 < r0 + rows_idx.size:
                # each unordered pair once: row position < column position in length order
                allowed = np.arange(r0, r0 + rows_idx.size)[:, None] < np.arange(c0, c1)[None, :]
                if c0 == r0 and c1 == r0 + rows_idx.size:
                    cols_idx = rows_idx  # the same object marks a diagonal block
            part = plan.verify_block(
                left, right, rows_idx, cols_idx, threshold, allowed=allowed, workers=workers
            )
            if within and len(part):
                a, b = np.minimum(part.left, part.right), np.maximum(part.left, part.right)
                part = PairArrays(a, b, part.scores)
            if len(part):
                found.append(part)
    return PairArrays.concat(found)
