"""Connected components of a pair graph (union-find over found pairs only)."""

from __future__ import annotations

from collections.abc import Iterable


def connected_components(n: int, edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Components of size >= 2 among nodes ``0..n-1``, each sorted, ordered by first node."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving keeps trees flat
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for node in range(n):
        groups.setdefault(find(node), []).append(node)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
