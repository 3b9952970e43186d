"""What believing only well-shaped cache values costs on a hit.

    python -m benchmarks.cache_validation [--redis redis://127.0.0.1:6379/0] [--ops 300]
                                          [--rounds 30]

A real ``AnalysisResult`` (an essay of the sample corpus, and the whole corpus as one
document) and a ``SimilarityResult`` are stored on Redis. Per hit, rounds interleaved,
each figure the median round:

* ``raw_get_orjson``: redis-py ``GET`` and ``orjson.loads`` -- what a user would write
  instead of our cache (the baseline);
* ``cache_hit``: ``SyncRedisCache.get_or_set`` hit without a check (main's behaviour);
* ``cache_hit_validated``: the same hit with the results cache's check
  (``redundancy.cache.results.conforms``: strict pydantic validation of the model);
* ``validate_only``: the check alone, on the decoded value (``orjson_only``: the decode
  alone, for scale).

Ratio = cache_hit_validated / raw_get_orjson. Only keys under ``redundancy:bench:v1:``
are written, and deleted at the end. Results: ``benchmarks/results/cache_validation.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import write_result

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bench"


def values() -> dict[str, tuple[Any, type]]:
    from redundancy.core import AnalysisResult, SimilarityResult, analyze, similarity

    corpus = ROOT / "examples" / "corpus"
    essay = (corpus / "essays" / "learning-a-language-as-an-adult.txt").read_text()
    report = "\n\n".join(p.read_text() for p in sorted(corpus.rglob("*.txt")))
    return {
        "analysis_essay": (analyze(essay).model_dump(mode="json"), AnalysisResult),
        "analysis_corpus_as_one": (analyze(report).model_dump(mode="json"), AnalysisResult),
        "similarity": (
            similarity(essay, report, "ratio", 0.8).model_dump(mode="json"),
            SimilarityResult,
        ),
    }


def median_us(runs: dict[str, Callable[[], Any]], ops: int, rounds: int) -> dict[str, float]:
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            started = time.perf_counter()
            for _ in range(ops):
                fn()
            seconds[name].append(time.perf_counter() - started)
    return {name: round(statistics.median(t) / ops * 1e6, 2) for name, t in seconds.items()}


def main() -> None:
    import orjson
    import redis

    from redundancy import keys
    from redundancy.cache import SyncRedisCache
    from redundancy.cache.results import conforms

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=30)
    opts = parser.parse_args()

    cache = SyncRedisCache(redis_url=opts.redis, default_ttl=600, namespace=PREFIX)
    raw = redis.Redis.from_url(opts.redis)
    cases: dict[str, Any] = {}
    for name, (value, model) in values().items():
        key = f"{name}:hot"
        full = keys.cache_key(PREFIX, key)
        assert cache.set(key, value)
        check = conforms(model)
        assert check(value)
        blob = raw.get(full)

        def never() -> Any:
            raise AssertionError("a hit must not compute")

        timings = median_us(
            {
                "raw_get_orjson": lambda full=full: orjson.loads(raw.get(full)),
                "cache_hit": lambda key=key: cache.get_or_set(key, never),
                "cache_hit_validated": lambda key=key, check=check: cache.get_or_set(
                    key, never, validate=check
                ),
                "validate_only": lambda value=value, check=check: check(value),
                "orjson_only": lambda blob=blob: orjson.loads(blob),
            },
            opts.ops,
            opts.rounds,
        )
        cases[name] = {
            "value_bytes": len(raw.get(full) or b""),
            "per_hit_us": timings,
            "ratio_validated_to_raw": round(
                timings["cache_hit_validated"] / timings["raw_get_orjson"], 3
            ),
            "ratio_validated_to_unvalidated": round(
                timings["cache_hit_validated"] / timings["cache_hit"], 3
            ),
        }
    cache.delete_pattern("*", prefix=PREFIX)
    write_result(
        "cache_validation",
        {"ops_per_round": opts.ops, "rounds": opts.rounds, "cases": cases},
    )


if __name__ == "__main__":
    main()
