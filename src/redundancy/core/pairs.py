"""Chunked all-pairs search with rapidfuzz: bounded memory, exact scores.

Why two passes: ``process.cdist`` with ``dtype=uint8`` and a ``score_cutoff`` is the
fastest way to find candidates and needs only one byte per pair of a block, but it rounds
scores. Survivors are rescored with ``process.cpdist`` in float64, which gives exactly what
``scorer(a, b)`` returns, so results equal a brute-force loop (same pairs, same scores).
A block of ``block_size`` x ``block_size`` bytes is the only matrix ever allocated.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import process

from redundancy.core.phases import CDIST, phase
from redundancy.core.scorers import Scorer

DEFAULT_BLOCK_SIZE = 2048
"""Rows and columns of one cdist block: 4 MiB of uint8 scores."""


@dataclass(frozen=True)
class PairArrays:
    """Pairs found, as parallel arrays: row index, column index, score (0..100)."""

    left: np.ndarray
    right: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.left.size)

    @classmethod
    def empty(cls) -> PairArrays:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))

    @classmethod
    def concat(cls, parts: Sequence[PairArrays]) -> PairArrays:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.left for p in parts]),
            np.concatenate([p.right for p in parts]),
            np.concatenate([p.scores for p in parts]),
        )


def uint8_cutoff(threshold: float) -> int:
    """Integer pre-filter cut-off that can only let more pairs through, never fewer."""
    return max(0, math.floor(threshold * 100.0 - 1e-6))


def find_pairs(
    rows: Sequence[str],
    columns: Sequence[str] | None = None,
    *,
    scorer: Scorer,
    threshold: float,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int = 1,
) -> PairArrays:
    """Every pair scoring ``>= threshold`` (0..1) under ``scorer``.

    With ``columns`` None, pairs ``(i, j)`` with ``i < j`` inside ``rows``; otherwise every
    ``(i, j)`` with ``i`` in ``rows`` and ``j`` in ``columns``. Texts are compared as given
    (``processor=None``): callers normalise first. ``workers`` is rapidfuzz's thread count
    (-1 = all cores); keep it 1 inside a prefork worker so parallelism stays one layer.
    Fewer than two rows (``columns`` None) or an empty side have no pairs: nothing is
    scored (a single long sentence once cost a full self-comparison here).
    """
    with phase(CDIST):
        return PairArrays.concat(
            list(iter_pairs(rows, columns, scorer, threshold, block_size, workers))
        )


def iter_pairs(
    rows: Sequence[str],
    columns: Sequence[str] | None,
    scorer: Scorer,
    threshold: float,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int = 1,
) -> Iterator[PairArrays]:
    """``find_pairs`` one block at a time: each block's pairs as soon as it is scored,
    so a caller that only needs counts and the best pairs holds one block, not all pairs
    (thousands of similar sentences have millions of pairs)."""
    within = columns is None
    cols: Sequence[str] = rows if columns is None else columns
    if len(rows) < (2 if within else 1) or not cols:
        return
    row_arr = np.asarray(rows, dtype=object)
    col_arr = row_arr if within else np.asarray(cols, dtype=object)
    cutoff = uint8_cutoff(threshold)
    for r0 in range(0, len(rows), block_size):
        row_block = row_arr[r0 : r0 + block_size]
        for c0 in range(r0 if within else 0, len(cols), block_size):
            # a diagonal block passes the same object twice: rapidfuzz then scores one
            # triangle of it for symmetric scorers (half the work)
            col_block = row_block if within and c0 == r0 else col_arr[c0 : c0 + block_size]
            candidates = process.cdist(
                row_block,
                col_block,
                scorer=scorer,
                processor=None,
                score_cutoff=cutoff,
                dtype=np.uint8,
                workers=workers,
            )
            if within and r0 == c0:
                candidates = np.triu(candidates, k=1)
            ii, jj = np.nonzero(candidates)
            if ii.size == 0:
                continue
            exact = process.cpdist(
                row_block[ii],
                col_block[jj],
                scorer=scorer,
                processor=None,
                dtype=np.float64,
                workers=workers,
            )
            keep = exact / 100.0 >= threshold
            yield PairArrays(ii[keep] + r0, jj[keep] + c0, exact[keep])
