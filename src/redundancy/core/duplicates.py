"""Identical texts as duplicate groups: one record per group, never n(n-1)/2 pairs.

Documents with the same content hash form a *duplicate group*; its *representative* is
the group's first document (lowest position). A near-duplicate pair between two distinct
texts is reported once, between their representatives, with the number of documents on
each side (``copies_a``, ``copies_b``); the group's ``positions`` map it back to every
member. So 10,000 copies of a blank page cost one group of 10,000 ids, in memory, in
every output format and in the batch event, instead of 50 million pairs.

Pair-level expansion (every document paired with every document, copies included: what a
brute-force loop over documents returns) is available on request and capped:
``expanded_pairs`` stops at a limit and says so (README, "Identical texts").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations, islice
from typing import Final

from redundancy.core.clusters import connected_components

ScoredPair = tuple[int, int, float]
"""(position a, position b, score 0..100) with a < b."""

IDENTICAL_SCORE: Final = 100.0
"""Score of two identical texts under every scorer (a unit test checks each one), so
copies are paired without scoring them."""

DEFAULT_MAX_EXPANDED_PAIRS: Final = 100_000
"""Pairs an expanded result lists at most (``EXPAND_IDENTICAL_MAX_PAIRS``): about 160 MiB
of result objects; the duplicate groups always list every copy."""


@dataclass(frozen=True)
class Grouping:
    """Which documents share a text: each position's representative and the groups."""

    representative: list[int]
    """Position -> the first position with the same content hash (itself if unique)."""
    members: dict[int, list[int]]
    """Representative -> every position with its text, for texts occurring twice or more."""

    @classmethod
    def of(cls, hashes: Sequence[str | None]) -> Grouping:
        """Group by content hash; a ``None`` hash (unreadable document) is never grouped."""
        first: dict[str, int] = {}
        representative = []
        members: dict[int, list[int]] = {}
        for position, digest in enumerate(hashes):
            rep = position if digest is None else first.setdefault(digest, position)
            representative.append(rep)
            if rep != position:
                members.setdefault(rep, [rep]).append(position)
        return cls(representative, members)

    def copies(self, position: int) -> int:
        """Documents with the text of ``position`` (1 when it occurs once)."""
        return len(self.members.get(self.representative[position], ())) or 1


def canonical_pairs(scored: Iterable[ScoredPair], grouping: Grouping) -> list[ScoredPair]:
    """Pairs between distinct texts, moved onto representatives, once each, sorted.

    Shards of a batch each report pairs between their own first copies, so one pair of
    texts may arrive several times under different positions; identical texts (one
    representative) are a group, not a pair.
    """
    rep = grouping.representative
    found: dict[tuple[int, int], float] = {}
    for a, b, score in scored:
        ra, rb = rep[a], rep[b]
        if ra != rb:
            found.setdefault((min(ra, rb), max(ra, rb)), score)
    return sorted((a, b, score) for (a, b), score in found.items())


def document_pair_count(pairs: Sequence[ScoredPair], grouping: Grouping) -> int:
    """Document pairs the grouped result stands for: each pair of texts times its copies,
    plus every pair of copies inside each group."""
    across = sum(grouping.copies(a) * grouping.copies(b) for a, b, _ in pairs)
    within = sum(len(g) * (len(g) - 1) // 2 for g in grouping.members.values())
    return across + within


def expanded_pairs(pairs: Sequence[ScoredPair], grouping: Grouping, limit: int) -> list[ScoredPair]:
    """Every document pair (copies included), at most ``limit`` of them, sorted.

    Pairs between distinct texts are expanded first, then the copies inside each group
    (at ``IDENTICAL_SCORE``), in position order, so a cut keeps the same pairs each time.
    """
    return sorted(islice(_every_document_pair(pairs, grouping), limit))


def _every_document_pair(pairs: Sequence[ScoredPair], grouping: Grouping) -> Iterator[ScoredPair]:
    def members(rep: int) -> list[int]:
        return grouping.members.get(rep, [rep])

    for a, b, score in pairs:
        for x in members(a):
            for y in members(b):
                yield (min(x, y), max(x, y), score)
    for group in grouping.members.values():
        for x, y in combinations(group, 2):
            yield (x, y, IDENTICAL_SCORE)


def clusters_of(count: int, pairs: Sequence[ScoredPair], grouping: Grouping) -> list[list[int]]:
    """Connected components over the pairs and the groups (each copy joined to its
    representative: k - 1 edges per group, not k(k-1)/2)."""
    edges = [(a, b) for a, b, _ in pairs]
    edges += [(g[0], m) for g in grouping.members.values() for m in g[1:]]
    return connected_components(count, edges)
