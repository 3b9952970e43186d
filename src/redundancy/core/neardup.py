"""Near-duplicate documents in a corpus: every pair with similarity >= threshold.

Exact duplicates (same content hash) are grouped first so each distinct text is scored
once; distinct texts are then compared by one of three search modes, and pairs are
expanded back to every document. Texts are compared in normalised form.

Modes (``mode=``):

* ``"all-pairs"``: every pair scored with chunked ``process.cdist`` (``pairs``); the
  brute-force reference.
* ``"exact"``: the same pairs and scores as all-pairs, faster, by pruning with provable
  bounds first (``bounds``). Scorers without proven bounds run all-pairs.
* ``"indexed"``: MinHash LSH candidates checked exactly (``lsh``): precision 1.0, recall
  estimated (>= 0.99 measured on near-duplicates with 5% word edits); sub-quadratic.
  Scorers without proven bounds run all-pairs.
* ``"auto"`` (default): exact below ``AUTO_INDEXED_FROM`` distinct texts, indexed from
  there on. Indexed runs only at thresholds >= ``MIN_INDEXED_THRESHOLD`` (else exact).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Final, cast

from redundancy.core.bounds import bounds_apply, exact_pairs
from redundancy.core.clusters import connected_components
from redundancy.core.lsh import LSHParams, indexed_pairs
from redundancy.core.models import DocumentPair, NearDuplicateResult, SearchMode
from redundancy.core.pairs import DEFAULT_BLOCK_SIZE, find_pairs
from redundancy.core.phases import CLUSTERING, NORMALISE, phase
from redundancy.core.scorers import (
    DEFAULT_ALGORITHM,
    DEFAULT_THRESHOLD,
    get_scorer,
    is_similar,
    validate_threshold,
)
from redundancy.core.text import DEFAULT_MAX_CHARS, hash_normalised, normalise, validate_text
from redundancy.errors import InvalidInputError

MODES: Final = ("auto", "exact", "indexed", "all-pairs")
AUTO_INDEXED_FROM: Final = 10_000
"""``mode="auto"`` runs exact search below this many distinct texts and indexed from here
on: exact costs O(n^2) cheap bound checks (about 1.5 minutes for 10,000 texts of 1,500
characters on 2 cores, 6 minutes for 20,000), indexed grows about linearly (15 s for
20,000, 2.5 minutes for 100,000)."""


MIN_INDEXED_THRESHOLD: Final = 0.75
"""Lowest threshold indexed mode runs at: below it, texts at the threshold share so few
5-shingles that LSH must propose a large share of all pairs (exact mode runs instead)."""


def resolve_mode(
    mode: str, distinct: int, algorithm: str, threshold: float | None = None
) -> SearchMode:
    """The mode that really runs for ``mode``, ``distinct`` texts, ``algorithm`` and
    ``threshold`` (indexed needs ``MIN_INDEXED_THRESHOLD``; below, exact runs)."""
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "auto":
        mode = "exact" if distinct < AUTO_INDEXED_FROM else "indexed"
    if mode != "all-pairs" and not bounds_apply(algorithm):
        return "all-pairs"  # no proven bounds (and no LSH model) for this scorer
    if mode == "indexed" and threshold is not None and threshold < MIN_INDEXED_THRESHOLD:
        return "exact"  # shingles carry too little signal: LSH would propose most pairs
    return cast(SearchMode, mode)


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


def valid_documents(
    items: Iterable[tuple[int, object]], *, max_chars: int = DEFAULT_MAX_CHARS
) -> list[Document]:
    """Documents of the ``(position, text)`` items that are valid text; invalid ones are
    left out (a batch reports them per item and never pairs them)."""
    docs = []
    for position, text in items:
        try:
            docs.append(Document.from_text(position, validate_text(text, max_chars=max_chars)))
        except InvalidInputError:
            continue
    return docs


def near_duplicates(
    texts: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    algorithm: str = DEFAULT_ALGORITHM,
    *,
    ids: Sequence[str] | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int = 1,
    mode: str = "auto",
) -> NearDuplicateResult:
    """Every pair of ``texts`` scoring >= ``threshold`` and the clusters they form.

    ``mode``: ``"auto"``, ``"exact"``, ``"indexed"`` or ``"all-pairs"`` (module docstring);
    the result's ``mode`` says which one ran.
    """
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
    hashes = [d.content_hash for d in docs]
    used = resolve_mode(mode, len(set(hashes)), algorithm, threshold)
    # LSH parameters from the document count (not the distinct count): what a batch of
    # the same documents uses, so both find the same candidates
    lsh = LSHParams.for_threshold(threshold, len(docs)) if used == "indexed" else None
    scored = pairs_between(
        docs,
        None,
        threshold,
        algorithm,
        block_size=block_size,
        workers=workers,
        mode=used,
        lsh=lsh,
    )
    return assemble(names, hashes, scored, threshold, algorithm, mode=used)


def pairs_between(
    left: Sequence[Document],
    right: Sequence[Document] | None,
    threshold: float,
    algorithm: str,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int = 1,
    mode: SearchMode = "all-pairs",
    lsh: LSHParams | None = None,
) -> list[ScoredPair]:
    """Near-duplicate pairs inside ``left`` (``right`` None) or across ``left`` x ``right``.

    This is the unit of work of one distributed shard as well as of the whole corpus;
    ``mode`` is a resolved mode (see ``resolve_mode``).
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
    rows = [d.normalised for d in left_reps]
    if mode == "exact":
        found = exact_pairs(
            rows, right_reps, algorithm=algorithm, threshold=threshold, workers=workers
        )
    elif mode == "indexed" and bounds_apply(algorithm):
        found = indexed_pairs(
            rows, right_reps, algorithm=algorithm, threshold=threshold, params=lsh, workers=workers
        )
    else:
        found = find_pairs(
            rows,
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
    *,
    mode: SearchMode = "all-pairs",
) -> NearDuplicateResult:
    """Sorted pairs plus connected components, by document id.

    ``names`` and ``hashes`` are indexed by position; a ``None`` hash marks a document that
    could not be read or validated (it is counted but never paired).
    """
    with phase(CLUSTERING):
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
        mode=mode,
        pairs=pairs,
        clusters=[[names[i] for i in comp] for comp in components],
    )


def expand_identical(
    scored: Sequence[ScoredPair],
    hashes: Sequence[str | None],
    self_score: Callable[[int], float],
    threshold: float,
) -> list[ScoredPair]:
    """Pairs found among first copies, extended to every copy of identical texts.

    ``scored`` pairs texts by the lowest position of their content hash (as a search that
    skipped the copies finds them); every other copy inherits its first copy's pairs, and
    the copies pair with each other at ``self_score(first position)`` (a text against
    itself), so the result equals a search over every document.
    """
    copies = identical_groups(hashes)
    if not copies:
        return list(scored)
    out: list[ScoredPair] = []
    for a, b, score in scored:
        out.extend(
            (min(x, y), max(x, y), score) for x in copies.get(a, (a,)) for y in copies.get(b, (b,))
        )
    for first, group in copies.items():
        score = self_score(first)
        if is_similar(score, threshold):
            out.extend((x, y, score) for x, y in combinations(group, 2))
    return out


def identical_groups(hashes: Sequence[str | None]) -> dict[int, list[int]]:
    """Positions of every text that occurs more than once, keyed by its first position
    (``None`` hashes, unreadable documents, are never grouped)."""
    groups: dict[str, list[int]] = {}
    for position, digest in enumerate(hashes):
        if digest is not None:
            groups.setdefault(digest, []).append(position)
    return {group[0]: group for group in groups.values() if len(group) > 1}


def _group_by_hash(docs: Sequence[Document]) -> list[list[Document]]:
    groups: dict[str, list[Document]] = {}
    for doc in docs:
        groups.setdefault(doc.content_hash, []).append(doc)
    return list(groups.values())


def _ordered(a: Document, b: Document, score: float) -> ScoredPair:
    if a.position < b.position:
        return (a.position, b.position, score)
    return (b.position, a.position, score)
