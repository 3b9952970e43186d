"""Near-duplicate documents in a corpus: every pair with similarity >= threshold.

Exact duplicates (same content hash) are grouped first so each distinct text is scored
once; distinct texts are then compared by one of three search modes. The result reports
identical texts as duplicate groups and pairs between distinct texts once, between the
groups' representatives (``duplicates``); pair-level expansion is on request and capped.
Texts are compared in normalised form.

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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, cast

from redundancy.core.bounds import bounds_apply, exact_pairs
from redundancy.core.cost import check_partial_length
from redundancy.core.duplicates import (
    DEFAULT_MAX_EXPANDED_PAIRS,
    Grouping,
    ScoredPair,
    canonical_pairs,
    clusters_of,
    document_pair_count,
    expanded_pairs,
)
from redundancy.core.lsh import LSHParams, indexed_pairs
from redundancy.core.models import DocumentPair, DuplicateGroup, NearDuplicateResult, SearchMode
from redundancy.core.pairs import DEFAULT_BLOCK_SIZE, find_pairs
from redundancy.core.phases import CLUSTERING, NORMALISE, phase
from redundancy.core.scorers import (
    DEFAULT_ALGORITHM,
    DEFAULT_THRESHOLD,
    get_scorer,
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
    items: Iterable[tuple[int, object]],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    algorithm: str | None = None,
) -> list[Document]:
    """Documents of the ``(position, text)`` items that are valid text (and, given the
    ``algorithm``, short enough for it to compare: ``cost.PARTIAL_MAX_CHARS``); the others
    are left out (a batch reports them per item and never pairs them)."""
    docs = []
    for position, text in items:
        try:
            doc = Document.from_text(position, validate_text(text, max_chars=max_chars))
            if algorithm is not None:
                check_partial_length(doc.normalised, algorithm, "document")
        except InvalidInputError:
            continue
        docs.append(doc)
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
    expand_identical: bool = False,
    max_expanded_pairs: int = DEFAULT_MAX_EXPANDED_PAIRS,
) -> NearDuplicateResult:
    """Every pair of distinct ``texts`` scoring >= ``threshold``, the identical texts as
    duplicate groups, and the clusters they form.

    ``mode``: ``"auto"``, ``"exact"``, ``"indexed"`` or ``"all-pairs"`` (module docstring);
    the result's ``mode`` says which one ran. ``expand_identical``: list every document
    pair, copies included, at most ``max_expanded_pairs`` (``redundancy.core.duplicates``).
    """
    texts = text_list(texts, "texts")
    threshold = validate_threshold(threshold)
    get_scorer(algorithm)
    if ids is not None:
        ids = text_list(ids, "ids")
        if len(ids) != len(texts):
            raise InvalidInputError(f"ids has {len(ids)} entries for {len(texts)} texts")
    names = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
    with phase(NORMALISE):
        docs = []
        for i, t in enumerate(texts):
            name = f"document {names[i]!r}"
            docs.append(Document.from_text(i, validate_text(t, max_chars=max_chars, name=name)))
            check_partial_length(docs[-1].normalised, algorithm, name)
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
    return assemble(
        names,
        hashes,
        scored,
        threshold,
        algorithm,
        mode=used,
        expand_identical=expand_identical,
        max_expanded_pairs=max_expanded_pairs,
    )


def text_list(values: object, name: str) -> list[str]:
    """``values`` as a list, or InvalidInputError when it is not a collection of items: a
    bare string would otherwise become one document per character."""
    if isinstance(values, str | bytes | bytearray | Mapping) or not isinstance(values, Iterable):
        raise InvalidInputError(f"{name} must be a list of strings, got {type(values).__name__}")
    return list(values)


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
    """Near-duplicate pairs of distinct texts inside ``left`` (``right`` None) or across
    ``left`` x ``right``: one pair per two texts, between their first documents here.

    Identical texts are scored once and never paired (they are a duplicate group, see
    ``redundancy.core.duplicates``). This is the unit of work of one distributed shard as
    well as of the whole corpus; ``mode`` is a resolved mode (see ``resolve_mode``).
    """
    scorer = get_scorer(algorithm)
    left_reps = distinct_documents(left)
    right_reps = left_reps if right is None else distinct_documents(right)
    if not left_reps or not right_reps or (right is None and len(left_reps) < 2):
        return []  # one text (or none) has no pair: no search at all
    rows = [d.normalised for d in left_reps]
    columns = None if right is None else [d.normalised for d in right_reps]
    if mode == "exact":
        found = exact_pairs(
            rows, columns, algorithm=algorithm, threshold=threshold, workers=workers
        )
    elif mode == "indexed" and bounds_apply(algorithm):
        found = indexed_pairs(
            rows, columns, algorithm=algorithm, threshold=threshold, params=lsh, workers=workers
        )
    else:
        found = find_pairs(
            rows,
            columns,
            scorer=scorer,
            threshold=threshold,
            block_size=block_size,
            workers=workers,
        )
    out: list[ScoredPair] = []
    for li, ri, score in zip(
        found.left.tolist(), found.right.tolist(), found.scores.tolist(), strict=True
    ):
        a, b = left_reps[li], right_reps[ri]
        if a.content_hash != b.content_hash:  # across shards: the same text on both sides
            out.append(_ordered(a, b, score))
    return out


def assemble(
    names: Sequence[str],
    hashes: Sequence[str | None],
    scored: Iterable[ScoredPair],
    threshold: float,
    algorithm: str,
    *,
    mode: SearchMode = "all-pairs",
    expand_identical: bool = False,
    max_expanded_pairs: int = DEFAULT_MAX_EXPANDED_PAIRS,
) -> NearDuplicateResult:
    """Pairs of distinct texts (between representatives), duplicate groups and clusters.

    ``names`` and ``hashes`` are indexed by position; a ``None`` hash marks a document that
    could not be read or validated (it is counted but never paired). ``scored`` may name
    any copy of a text and repeat a pair of texts (shards do); ``expand_identical`` lists
    every document pair instead, at most ``max_expanded_pairs``.
    """
    with phase(CLUSTERING):
        grouping = Grouping.of(hashes)
        pairs = canonical_pairs(scored, grouping)
        total = document_pair_count(pairs, grouping)
        listed, cut = pairs, None
        if expand_identical:
            listed = expanded_pairs(pairs, grouping, max_expanded_pairs)
            if total > len(listed):
                cut = (
                    f"expanded pairs stop at {len(listed):,} of {total:,} "
                    f"(EXPAND_IDENTICAL_MAX_PAIRS = {max_expanded_pairs:,}); duplicate_groups "
                    "lists every copy"
                )
        components = clusters_of(len(names), pairs, grouping)
        result = NearDuplicateResult(
            document_count=len(names),
            unique_count=len({h for h in hashes if h is not None}),
            threshold=threshold,
            algorithm=algorithm,
            mode=mode,
            pairs=[
                DocumentPair(
                    a=a,
                    b=b,
                    id_a=names[a],
                    id_b=names[b],
                    score=score / 100.0,
                    exact=hashes[a] == hashes[b],
                    copies_a=grouping.copies(a),
                    copies_b=grouping.copies(b),
                )
                for a, b, score in listed
            ],
            duplicate_groups=[
                DuplicateGroup(
                    content_hash=str(hashes[rep]),
                    representative=names[rep],
                    position=rep,
                    count=len(members),
                    ids=[names[m] for m in members],
                    positions=members,
                )
                for rep, members in sorted(grouping.members.items())
            ],
            document_pair_count=total,
            expanded=expand_identical,
            expansion_cut=cut,
            clusters=[[names[i] for i in comp] for comp in components],
        )
    return result


def distinct_documents(docs: Sequence[Document]) -> list[Document]:
    """The first document of each distinct text, in order (copies add no pair)."""
    first: dict[str, Document] = {}
    for doc in docs:
        first.setdefault(doc.content_hash, doc)
    return list(first.values())


def _ordered(a: Document, b: Document, score: float) -> ScoredPair:
    if a.position < b.position:
        return (a.position, b.position, score)
    return (b.position, a.position, score)
