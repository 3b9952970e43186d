"""Prometheus counters of the cache, with the original service's names (docs/architecture.md §7).

Defined here and incremented by the cache; exposing them (the ``/metrics`` endpoint and
prefork multiprocess mode) belongs to observability. ``cache_type`` is the cache type of
the key (``analysis``, ``similarity`` ... see ``redundancy.cache``).
"""

from __future__ import annotations

from prometheus_client import Counter

CACHE_HITS = Counter("cache_hits_total", "Cache lookups that found a value.", ["cache_type"])
CACHE_MISSES = Counter(
    "cache_misses_total",
    "Cache lookups that found nothing (the value was computed).",
    ["cache_type"],
)
CACHE_ERRORS = Counter(
    "redundancy_cache_errors_total",
    "Cache operations that failed (server unreachable, timeout, bad stored value); the "
    "caller went on without the cache.",
    ["cache_type", "operation"],
)

CACHE_REJECTED = Counter(
    "redundancy_cache_rejected_values",
    "Stored values get_or_set refused on read, by reason (undecodable: not JSON; invalid: "
    "not the caller's result model); each was a miss, computed again and overwritten.",
    ["cache_type", "reason"],
)

__all__ = ["CACHE_ERRORS", "CACHE_HITS", "CACHE_MISSES", "CACHE_REJECTED"]
