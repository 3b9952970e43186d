"""Indexed near-duplicate search: MinHash LSH on character shingles, then exact checks.

Candidates come from locality-sensitive hashing, so the cost grows with the number of
documents instead of its square; every candidate is then checked with the exact-mode
bounds and scored with rapidfuzz, so every pair returned is a true pair with its exact
score (precision 1.0). A true pair is missed only if LSH never proposes it: recall is
estimated, not guaranteed (see ``LSHParams.miss_probability`` and the benchmarks).

How the parameters follow from the threshold ``t`` (``LSHParams.for_threshold``):

* Shingles are the sets of character 5-grams of the normalised texts (``SHINGLE``).
* ``target_jaccard(t)``: the Jaccard similarity of the shingle sets of two texts whose
  ``ratio`` is exactly ``t`` and whose differences are edits of average Indel cost
  ``EDIT_COST`` (8 = one replaced word). With Indel distance ``D = (1 - t)(|a| + |b|)``
  and ``D / EDIT_COST`` edits, each edit of cost ``c`` removes about ``c/2 + q - 1``
  shingles from one side and adds as many to the other, so with ``x = (1 - t)(1 +
  2(q - 1)/EDIT_COST)`` the Jaccard is ``(1 - x)/(1 + x)`` (0.43 at ``t = 0.8``).
* Bands ``b`` of ``r`` rows: a pair with Jaccard ``J`` becomes a candidate with
  probability ``1 - (1 - J^r)^b``. For each ``r``, ``b`` is the fewest bands that miss a
  pair at the target Jaccard with probability at most ``MISS_AT_TARGET`` (0.1%); among
  those, ``r`` minimises the expected work: signatures (``b * r`` hash values per
  document) plus checking the unrelated pairs that collide by chance (assumed Jaccard
  ``UNRELATED_JACCARD``), for the corpus size at hand.

Signatures use one-permutation hashing: each round hashes every shingle once into 256
bins and keeps the minimum per bin (empty bins borrow from the next full bin,
"densification"), so a round costs one pass over the shingles instead of 256. A band
takes bins that lie far apart in its round (strided), so the rows of one band are never
copies of each other in a short text (consecutive bins made short texts collide in bulk:
28% of all pairs of the Debian paragraphs became candidates instead of 1%).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from redundancy.core.bounds import BoundPlan, prepare
from redundancy.core.pairs import PairArrays

SHINGLE = 5
"""Characters per shingle."""

EDIT_COST = 8.0
"""Assumed mean Indel cost of one edit (a replaced word of ~4 characters)."""

MISS_AT_TARGET = 1e-3
"""Probability that LSH misses a pair whose Jaccard equals the target."""

UNRELATED_JACCARD = 0.1
"""Typical shingle Jaccard of unrelated texts (used only to choose r; measured 0.03-0.1
for 5-grams of natural-language documents)."""

BINS = 256
"""Bins per one-permutation-hashing round (top 8 bits of the hash pick the bin)."""

MAX_ROWS = 10
MAX_BANDS = 4096

SIGNATURE_COST = 3e-8
"""Seconds per shingle per round (measured; only used to choose r)."""

VERIFY_COST = 5e-6
"""Seconds to check one candidate pair with the bounds (measured; only used to choose r)."""

ASSUMED_LENGTH = 1500
"""Characters per document assumed by the cost estimate (only used to choose r)."""

SLICE_DOCS = 2048
"""Documents hashed per numpy pass."""

_U32 = np.uint32
_FMIX1, _FMIX2 = _U32(0x85EBCA6B), _U32(0xC2B2AE35)
_ROLL = _U32(0x01000193)
_VALUE_MASK = _U32(0x00FFFFFF)


def target_jaccard(threshold: float, shingle: int = SHINGLE, edit_cost: float = EDIT_COST) -> float:
    """Expected shingle Jaccard of two texts at ``ratio == threshold`` (module docstring)."""
    x = (1.0 - threshold) * (1.0 + 2.0 * (shingle - 1) / edit_cost)
    return max(0.0, (1.0 - x) / (1.0 + x))


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """Probability that a pair with this Jaccard shares at least one band."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


@dataclass(frozen=True)
class LSHParams:
    """Shingle size, bands and rows per band, and the hash seed."""

    bands: int
    rows: int
    shingle: int = SHINGLE
    seed: int = 1

    @property
    def bands_per_round(self) -> int:
        return BINS // self.rows

    @property
    def rounds(self) -> int:
        return math.ceil(self.bands / self.bands_per_round)

    def miss_probability(self, jaccard: float) -> float:
        return 1.0 - candidate_probability(jaccard, self.bands, self.rows)

    @classmethod
    def for_threshold(cls, threshold: float, documents: int) -> LSHParams:
        """Parameters for ``threshold`` and a corpus of ``documents`` (module docstring).

        Only the threshold and the count matter, so a batch staged as a stream and the
        same corpus in-process get the same parameters (and the same candidates).
        """
        target = target_jaccard(threshold)
        if target <= 0.0:
            # thresholds this low have no useful shingle signal: every pair collides
            return cls(bands=1, rows=1)
        pairs = documents * (documents - 1) / 2.0
        shingles = ASSUMED_LENGTH - SHINGLE + 1
        best: tuple[float, int, int] | None = None
        for rows in range(1, MAX_ROWS + 1):
            hit = target**rows
            bands = 1 if hit >= 1.0 else math.ceil(math.log(MISS_AT_TARGET) / math.log1p(-hit))
            if bands > MAX_BANDS:
                continue
            cost = (
                documents * shingles * cls(bands=bands, rows=rows).rounds * SIGNATURE_COST
                + pairs * candidate_probability(UNRELATED_JACCARD, bands, rows) * VERIFY_COST
            )
            if best is None or cost < best[0]:
                best = (cost, bands, rows)
        if best is None:  # the target needs more bands than allowed: use the most allowed
            rows = (
                max(
                    1,
                    math.floor(math.log(1 - MISS_AT_TARGET ** (1 / MAX_BANDS)) / math.log(target)),
                )
                if target < 1
                else 1
            )
            return cls(bands=MAX_BANDS, rows=min(rows, MAX_ROWS))
        return cls(bands=best[1], rows=best[2])


def _fmix(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (in place): every input bit affects every output bit."""
    x ^= x >> _U32(16)
    x *= _FMIX1
    x ^= x >> _U32(13)
    x *= _FMIX2
    x ^= x >> _U32(16)
    return x


def shingle_hashes(texts: Sequence[str], shingle: int = SHINGLE) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every character ``shingle``-gram, with the index of its text.

    A text shorter than ``shingle`` has one shingle: itself.
    """
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    padded = [t if len(t) >= shingle else t.ljust(shingle, "\0") for t in texts]
    plens = np.maximum(lengths, shingle)
    cps = np.frombuffer("".join(padded).encode("utf-32-le"), dtype="<u4")
    n = cps.size
    h = cps[: n - shingle + 1].copy()
    for j in range(1, shingle):  # polynomial rolling hash, wrapping at 2**32
        h *= _ROLL
        h += cps[j : n - shingle + 1 + j]
    # keep the shingles that start and end inside one text: drop the q-1 starts before
    # each text's end
    inside = np.ones(h.size, dtype=bool)
    ends = np.cumsum(plens)
    for k in range(1, shingle):
        cut = ends - k
        inside[cut[cut < h.size]] = False
    doc = np.repeat(np.arange(len(texts)), plens - shingle + 1)
    return _fmix(h[inside]), doc


def _round_signatures(hashes: np.ndarray, doc: np.ndarray, docs: int, salt: int) -> np.ndarray:
    """One round of one-permutation hashing: ``docs`` x ``BINS`` minimum values."""
    y = _fmix(hashes ^ _U32(salt & 0xFFFFFFFF))
    bins = (y >> _U32(24)).astype(np.int64)
    flat = np.full(docs * BINS, np.iinfo(np.uint32).max, dtype=np.uint32)
    np.minimum.at(flat, doc * BINS + bins, y & _VALUE_MASK)
    sig: np.ndarray = flat.reshape(docs, BINS)
    empty = sig == np.iinfo(np.uint32).max
    if empty.any():
        # densification: an empty bin takes the value of the next full bin to its right
        # (circularly) plus a per-distance offset, so that two texts agree on it with
        # the same probability as on the bin it borrows from
        idx = np.where(~empty, np.arange(BINS), 2 * BINS)
        twice = np.concatenate((idx, idx + BINS), axis=1)
        nxt = np.minimum.accumulate(twice[:, ::-1], axis=1)[:, ::-1][:, :BINS]
        rows = np.nonzero(empty.any(axis=1))[0]
        sub = nxt[rows] % BINS
        dist = (nxt[rows] - np.arange(BINS)).astype(np.uint32)
        filled = np.take_along_axis(sig[rows], sub, axis=1) + dist * _U32(0x9E3779B1)
        sig[rows] = np.where(empty[rows], filled, sig[rows])
    return sig


def band_keys(texts: Sequence[str], params: LSHParams, round_: int) -> np.ndarray:
    """64-bit keys of the bands of one round: ``len(texts)`` x ``bands in this round``.

    Two texts share a key (almost surely) only if they agree on all ``rows`` bins of the
    band; the band number is mixed in, so keys of different bands never meet.
    """
    first = round_ * params.bands_per_round
    count = min(params.bands_per_round, params.bands - first)
    rng = np.random.default_rng([params.seed, round_])
    mult = rng.integers(1, 2**63, size=params.rows, dtype=np.uint64) | np.uint64(1)
    salts = rng.integers(0, 2**63, size=count, dtype=np.uint64)
    out = np.empty((len(texts), count), dtype=np.uint64)
    for s in range(0, len(texts), SLICE_DOCS):
        part = texts[s : s + SLICE_DOCS]
        hashes, doc = shingle_hashes(part, params.shingle)
        sig = _round_signatures(hashes, doc, len(part), params.seed * 1_000_003 + round_)
        # band j takes bins j, j + per, j + 2 * per, ...: far apart, so a densified bin
        # and the bin it borrows from are (almost) never rows of the same band
        per = params.bands_per_round
        vals = sig[:, : per * params.rows].reshape(len(part), params.rows, per)
        vals = vals.transpose(0, 2, 1)[:, :count, :]
        key = (vals.astype(np.uint64) * mult).sum(axis=2, dtype=np.uint64) + salts
        out[s : s + len(part)] = _mix64(key)
    return out


def _mix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    out: np.ndarray = x ^ (x >> np.uint64(33))
    return out


def colliding_pairs(keys: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of ``positions`` sharing a key (``keys`` flat, one position per key),
    as ``(low, high)`` arrays, deduplicated."""
    order = np.argsort(keys, kind="stable")
    k, p = keys[order], positions[order]
    same = k[1:] == k[:-1]
    if not same.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    run_start = np.concatenate(([True], ~same))
    run_id = np.cumsum(run_start) - 1
    run_len = np.bincount(run_id)
    run_end = np.cumsum(run_len)[run_id]  # exclusive end of each position's run
    idx = np.flatnonzero(run_len[run_id] > 1)
    lows, highs = [], []
    offset = 1
    while idx.size:  # pairs at distance `offset` inside each run; work = pairs emitted
        idx = idx[idx + offset < run_end[idx]]
        if not idx.size:
            break
        a, b = p[idx], p[idx + offset]
        lows.append(np.minimum(a, b))
        highs.append(np.maximum(a, b))
        offset += 1
    lo, hi = np.concatenate(lows), np.concatenate(highs)
    keep = lo != hi
    return unique_pairs(lo[keep], hi[keep])


def unique_pairs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ``(lo, hi)`` pairs."""
    if lo.size == 0:
        return lo.astype(np.int64), hi.astype(np.int64)
    packed = np.unique((lo.astype(np.int64) << 32) | hi.astype(np.int64))
    return packed >> 32, packed & 0xFFFFFFFF


def candidates(texts: Sequence[str], params: LSHParams) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Candidate pairs, round by round (a pair may come again in a later round)."""
    positions = np.arange(len(texts), dtype=np.int64)
    for round_ in range(params.rounds):
        keys = band_keys(texts, params, round_)
        flat_pos = np.repeat(positions, keys.shape[1])
        yield colliding_pairs(keys.ravel(), flat_pos)


def indexed_pairs(
    rows: Sequence[str],
    columns: Sequence[str] | None = None,
    *,
    algorithm: str,
    threshold: float,
    params: LSHParams | None = None,
    workers: int = 1,
) -> PairArrays:
    """Pairs ``>= threshold`` among LSH candidates, with exact scores (precision 1.0).

    With ``columns`` None: pairs ``i < j`` inside ``rows``; else pairs across.
    Callers check ``bounds_apply(algorithm)`` first (other scorers run all-pairs).
    """
    texts = prepare([*rows] if columns is None else [*rows, *columns], algorithm)
    if len(texts) < 2:
        return PairArrays.empty()
    params = params or LSHParams.for_threshold(threshold, len(texts))
    split = len(rows)
    found_lo: list[np.ndarray] = []
    found_hi: list[np.ndarray] = []
    for lo, hi in candidates(texts, params):
        if columns is not None:
            cross = (lo < split) & (hi >= split)
            lo, hi = lo[cross], hi[cross]
        found_lo.append(lo)
        found_hi.append(hi)
    lo, hi = unique_pairs(np.concatenate(found_lo), np.concatenate(found_hi))
    if lo.size == 0:
        return PairArrays.empty()
    # bound features only for the documents that are in some candidate pair
    involved = np.union1d(lo, hi)
    subset = [texts[i] for i in involved.tolist()]
    plan = BoundPlan.build(subset, threshold)
    feats = plan.features(subset)
    found = plan.verify(
        feats,
        feats,
        np.searchsorted(involved, lo),
        np.searchsorted(involved, hi),
        threshold,
        workers=workers,
    )
    left, right = involved[found.left], involved[found.right]
    if columns is not None:
        right = right - split
    return PairArrays(left, right, found.scores)
