"""The cache against raw redis-py, and analyze_content with a warm against a cold cache,
measured side by side in one run.

    python -m benchmarks.cache [--redis redis://127.0.0.1:6379/0] [--ops 3000] [--rounds 5]

1. Cache-hit ``get`` of a real AnalysisResult (JSON, ~6 KB) on Redis: ``SyncRedisCache.get``
   against redis-py ``GET`` of the same key -- the bytes alone, and the bytes decoded by
   hand (``json.loads``, and ``orjson.loads``, the decoder the cache uses) -- then the
   async face against ``redis.asyncio`` the same way. Rounds
   alternate between the contenders; each figure is the median round. Ratio =
   cache ops/s / raw GET ops/s (the aim: >= 0.8).
2. ``analyze_content`` called in-process (validation, cache key, cache I/O, core, JSON) on
   a realistic document: cold (its entry deleted before each call: a miss, the lock, the
   analysis, the store), warm (a hit), and with the cache off (``CACHE_RESULTS=false``),
   so the speed-up and the cost of a miss are both visible.

Only keys under ``redundancy:bench:v1:`` and the analysis entries of the documents used
are written, and they are deleted at the end; nothing else on the server is touched.
Results: ``benchmarks/results/cache.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bench"


def _median_round(
    contenders: dict[str, Callable[[int], float]], ops: int, rounds: int
) -> dict[str, Any]:
    """Run each contender ``rounds`` times, interleaved; per contender the median round."""
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            seconds[name].append(run(ops))
    return summarise(seconds, ops)


def summarise(seconds: dict[str, list[float]], ops: int) -> dict[str, Any]:
    """Per contender: ops/s of the median round (and of the best round, which shows
    the code's own cost best on a busy machine) and the mean latency of the median."""
    return {
        name: {
            "ops_per_s": round(ops / statistics.median(times), 1),
            "ops_per_s_best_round": round(ops / min(times), 1),
            "mean_latency_us": round(statistics.median(times) / ops * 1e6, 2),
        }
        for name, times in seconds.items()
    }


def bench_get(url: str, value: Any, ops: int, rounds: int) -> dict[str, Any]:
    import orjson
    import redis
    import redis.asyncio as aioredis

    from redundancy import keys
    from redundancy.cache import RedisCache

    key = "analysis:hot"
    full = keys.cache_key(PREFIX, key)
    cache = RedisCache(redis_url=url, default_ttl=600, namespace=PREFIX)
    sync = cache.sync
    assert sync.set(key, value) and sync.get(key) == value
    raw = redis.Redis.from_url(url)
    size = len(raw.get(full) or b"")

    def timed(fn: Callable[[], Any]) -> Callable[[int], float]:
        def run(n: int) -> float:
            started = time.perf_counter()
            for _ in range(n):
                fn()
            return time.perf_counter() - started

        return run

    sync_results = _median_round(
        {
            "raw_get": timed(lambda: raw.get(full)),
            "raw_get_json": timed(lambda: json.loads(raw.get(full))),
            "raw_get_orjson": timed(lambda: orjson.loads(raw.get(full))),
            "cache_get": timed(lambda: sync.get(key)),
        },
        ops,
        rounds,
    )

    async def async_part() -> dict[str, Any]:
        araw = aioredis.Redis.from_url(url)
        assert await cache.get(key) == value

        def atimed(make: Callable[[], Any]) -> Callable[[int], Any]:
            async def run(n: int) -> float:
                started = time.perf_counter()
                for _ in range(n):
                    await make()
                return time.perf_counter() - started

            return run

        async def raw_json() -> Any:
            return json.loads(await araw.get(full))

        async def raw_orjson() -> Any:
            return orjson.loads(await araw.get(full))

        contenders = {
            "raw_get": atimed(lambda: araw.get(full)),
            "raw_get_json": atimed(raw_json),
            "raw_get_orjson": atimed(raw_orjson),
            "cache_get": atimed(lambda: cache.get(key)),
        }
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, run in contenders.items():
                seconds[name].append(await run(ops))
        await araw.aclose()
        await cache.close()
        return summarise(seconds, ops)

    async_results = asyncio.run(async_part())
    stats = sync.stats()
    sync.delete_pattern("*", prefix=PREFIX)

    def ratios(r: dict[str, Any]) -> dict[str, float]:
        out = {}
        for base in ("raw_get", "raw_get_json", "raw_get_orjson"):
            for stat, suffix in (("ops_per_s", ""), ("ops_per_s_best_round", "_best_round")):
                out[f"cache_vs_{base}{suffix}"] = round(r["cache_get"][stat] / r[base][stat], 3)
        return out

    return {
        "value_bytes": size,
        "sync": {**sync_results, "ratios": ratios(sync_results)},
        "async": {**async_results, "ratios": ratios(async_results)},
        "cache_hits_counted": stats["hits"],
    }


def bench_analyze(url: str, documents: dict[str, str], calls: int, rounds: int) -> dict[str, Any]:
    from redundancy.cache import get_cache, reset_cache
    from redundancy.cache.results import analysis_key
    from redundancy.config import get_settings
    from redundancy.tasks import analyze_content

    os.environ["REDIS_CACHE_URL"] = url
    get_settings.cache_clear()
    reset_cache()
    cache = get_cache()
    out: dict[str, Any] = {}
    for name, text in documents.items():
        key = analysis_key(text, 0.8, "ratio")
        expected = analyze_content(text)

        def cold(n: int, key: str = key, text: str = text, expected: Any = expected) -> float:
            total = 0.0
            for _ in range(n):
                cache.delete(key)
                started = time.perf_counter()
                assert analyze_content(text) == expected
                total += time.perf_counter() - started
            return total

        def warm(n: int, text: str = text, expected: Any = expected) -> float:
            started = time.perf_counter()
            for _ in range(n):
                assert analyze_content(text) == expected
            return time.perf_counter() - started

        def off(n: int, text: str = text, expected: Any = expected) -> float:
            os.environ["CACHE_RESULTS"] = "false"
            get_settings.cache_clear()
            try:
                started = time.perf_counter()
                for _ in range(n):
                    assert analyze_content(text) == expected
                return time.perf_counter() - started
            finally:
                del os.environ["CACHE_RESULTS"]
                get_settings.cache_clear()

        warm_calls = max(calls * 20, 200)
        times: dict[str, list[float]] = {"cold": [], "warm": [], "no_cache": []}
        for _ in range(rounds):
            times["cold"].append(cold(calls) / calls)
            times["warm"].append(warm(warm_calls) / warm_calls)
            times["no_cache"].append(off(calls) / calls)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[name] = {
            "characters": len(text),
            "sentences": expected["sentence_count"],
            "cold_ms": round(med["cold"] * 1000, 3),
            "warm_ms": round(med["warm"] * 1000, 3),
            "no_cache_ms": round(med["no_cache"] * 1000, 3),
            "speedup_warm_vs_cold": round(med["cold"] / med["warm"], 1),
            "miss_overhead_vs_no_cache": round(med["cold"] / med["no_cache"], 3),
        }
        cache.delete(key)
    return out


def documents() -> dict[str, str]:
    corpus = ROOT / "examples" / "corpus"
    essay = (corpus / "essays" / "learning-a-language-as-an-adult.txt").read_text()
    # a long report-like document: every corpus text in one, with its own near duplicates
    report = "\n\n".join(p.read_text() for p in sorted(corpus.rglob("*.txt")))
    return {"essay_2.5kB": essay, "corpus_as_one_document_80kB": report}


def machine() -> dict[str, Any]:
    import redis

    info = {}
    try:
        server = redis.Redis.from_url(ARGS.redis).info("server")
        info = {"redis_version": server.get("redis_version")}
    except Exception:
        pass
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        **info,
    }


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis",
        default=os.environ.get("REDIS_CACHE_URL")
        or os.environ.get("REDIS_URL")
        or "redis://127.0.0.1:6379/0",
    )
    parser.add_argument("--ops", type=int, default=300, help="gets per round")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=10, help="cold analyze calls per round")
    parser.add_argument("--analyze-rounds", type=int, default=5)
    ARGS = parser.parse_args()
    for var in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        os.environ.pop(var, None)  # in-process: the embedded default around a real cache

    from redundancy.core import analyze

    docs = documents()
    values = {  # AnalysisResults of a short and of a long document
        "small": analyze(docs["essay_2.5kB"]).model_dump(mode="json"),
        "large": analyze(docs["corpus_as_one_document_80kB"]).model_dump(mode="json"),
    }
    started = time.perf_counter()
    result = {
        "benchmark": "cache",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "redis": ARGS.redis,
        "get_hit": {
            name: bench_get(ARGS.redis, value, ARGS.ops, ARGS.rounds)
            for name, value in values.items()
        },
        "analyze_content": bench_analyze(ARGS.redis, docs, ARGS.calls, ARGS.analyze_rounds),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "cache.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print("cache-hit get (ops/s; ratio of the cache to raw GET / to GET+orjson.loads):")
    rows = [(g, face) for g in result["get_hit"].values() for face in ("sync", "async")]
    for g, face in rows:
        r = g[face]
        print(
            f"  {g['value_bytes']:>5} B {face:5}  raw GET {r['raw_get']['ops_per_s']:>7,.0f}  "
            f"GET+json {r['raw_get_json']['ops_per_s']:>7,.0f}  "
            f"GET+orjson {r['raw_get_orjson']['ops_per_s']:>7,.0f}  "
            f"cache {r['cache_get']['ops_per_s']:>7,.0f}  "
            f"-> {r['ratios']['cache_vs_raw_get']:.2f}x / "
            f"{r['ratios']['cache_vs_raw_get_orjson']:.2f}x "
            f"(best rounds {r['ratios']['cache_vs_raw_get_best_round']:.2f}x / "
            f"{r['ratios']['cache_vs_raw_get_orjson_best_round']:.2f}x)"
        )
    print("analyze_content in-process (median ms per call):")
    for name, r in result["analyze_content"].items():
        print(
            f"  {name}: cold {r['cold_ms']} ms, warm {r['warm_ms']} ms "
            f"({r['speedup_warm_vs_cold']}x faster), no cache {r['no_cache_ms']} ms"
        )
    print(f"wrote {path.relative_to(ROOT)}")


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
