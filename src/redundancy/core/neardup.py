"""Near-duplicate documents in a corpus: every pair with similarity >= threshold.

Exact duplicates (same content hash) are grouped first so each distinct text is scored
once; distinct texts are then compared with chunked ``process.cdist`` (see ``pairs``), and
pairs are expanded back to every document. Texts are compared in normalised form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from redundancy.core.clusters import connected_components
from redundancy.core.models import DocumentPair, NearDuplicateResult
from redundancy.core.pairs import DEFAULT_BLOCK_SIZE, find_pairs
from redundancy.core.phases import CLUSTERING, NORMALISE, phase
from redundancy.core.scorers import DEFAULT_ALGORITHM, get_scorer, is_similar, validate_threshold
from redundancy.core.text import DEFAULT_MAX_CHARS, hash_normalised, normalise, validate_text

ScoredPair = tuple[int, int, float]
"""(position a, position b, score 0..100) with a < b."""


@dataclass(frozen=True)
class Document:
    """One document ready for comparison: its position in the corpus and normalised text."""

    position: int
    normalised: str
    content_hash: str

    @classmethod
    def from_text(cls, position: int, text: str) -> Document:
        norm = normalise(text)
        return cls(position, norm, hash_normalised(norm))


def near_duplicates(
    texts: Sequence[str],
    threshold: float = 0.8,
    algorithm: str = DEFAULT_ALGORITHM,
    *,
    ids: Sequence[str] | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int = 1,
) -> NearDuplicateResult:
    """Every pair of ``texts`` scoring >= ``threshold`` and the clusters they form."""
    threshold = validate_threshold(threshold)
    get_scorer(algorithm)
    if ids is not None and len(ids) != len(texts):
        raise ValueError(f"ids has {len(ids)} entries for {len(texts)} texts")
    names = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
    with phase(NORMALISE):
        docs = [
            Document.from_text(
                i, validate_text(t, max_chars=max_chars, name=f"document {names[i]!r}")
            )
            for i, t in enumerate(texts)
        ]
    scored = pairs_between(
        docs, None, threshold, algorithm, block_size=block_size, workers=workers
    )
    return assemble(names, [d.content_hash for d in docs], scored, threshold, algorithm)


def pairs_between(
    left: Sequence[Document],
    right: Sequence[Document] | None,
    threshold: float,
    algorithm: str,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int = 1,
) -> list[ScoredPair]:
    """Near-duplicate pairs inside ``left`` (``right`` None) or across ``left`` x ``right``.

    This is the unit of work of one distributed shard as well as of the whole corpus.
    """
    scorer = get_scorer(algorithm)
    left_groups = _group_by_hash(left)
    left_reps = [g[0] for g in left_groups]
    out: list[ScoredPair] = []
    if right is None:
        for group in left_groups:  # identical texts: one score per group
            if len(group) > 1:
                self_score = scorer(group[0].normalised, group[0].normalised, processor=None)
                if is_similar(self_score, threshold):
                    out.extend(_ordered(a, b, self_score) for a, b in combinations(group, 2))
        right_groups, right_reps = left_groups, None
    else:
        right_groups = _group_by_hash(right)
        right_reps = [g[0].normalised for g in right_groups]
    found = find_pairs(
        [d.normalised for d in left_reps],
        right_reps,
        scorer=scorer,
        threshold=threshold,
        block_size=block_size,
        workers=workers,
    )
    for li, ri, score in zip(
        found.left.tolist(), found.right.tolist(), found.scores.tolist(), strict=True
    ):
        out.extend(_ordered(a, b, score) for a in left_groups[li] for b in right_groups[ri])
    return out


def assemble(
    names: Sequence[str],
    hashes: Sequence[str | None],
    scored: Sequence[ScoredPair],
    threshold: float,
    algorithm: str,
) -> NearDuplicateResult:
    """Sorted pairs plus connected components, by document id.

    ``names`` and ``hashes`` are indexed by position; a ``None`` hash marks a document that
    could not be read or validated (it is counted but never paired).
    """
    with phase(CLUSTERING):
        return _assemble(names, hashes, scored, threshold, algorithm)


def _assemble(
    names: Sequence[str],
    hashes: Sequence[str | None],
    scored: Sequence[ScoredPair],
    threshold: float,
    algorithm: str,
) -> NearDuplicateResult:
    ordered = sorted(scored)
    pairs = [
        DocumentPair(
            a=a,
            b=b,
            id_a=names[a],
            id_b=names[b],
            score=score / 100.0,
            exact=hashes[a] == hashes[b],
        )
        for a, b, score in ordered
    ]
    components = connected_components(len(names), ((a, b) for a, b, _ in ordered))
    return NearDuplicateResult(
        document_count=len(names),
        unique_count=len({h for h in hashes if h is not None}),
        threshold=threshold,
        algorithm=algorithm,
        pairs=pairs,
        clusters=[[names[i] for i in comp] for comp in components],
    )


def _group_by_hash(docs: Sequence[Document]) -> list[list[Document]]:
    groups: dict[str, list[Document]] = {}
    for doc in docs:
        groups.setdefault(doc.content_hash, []).append(doc)
    return list(groups.values())


def _ordered(a: Document, b: Document, score: float) -> ScoredPair:
    return (a.position, b.position, score) if a.position < b.position else (b.position, a.position, score)
