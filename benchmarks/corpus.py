"""Corpora: bulk indexing, queries, recall, memory and rebuild, against datasketch.

    python -m benchmarks.corpus                                   # 10k and 100k documents
    python -m benchmarks.corpus --sizes 10000 --broker redis://127.0.0.1:6404/10

For each size, on synthetic ~1,500-character documents with injected near-duplicates
(``benchmarks/corpora.py``: 10% are copies of an earlier document with 5% of their words
edited), in one run:

* **indexing**: documents/s and CPU per document (worker processes and redis-server; the
  CPU figure moves less with the load of a shared machine), the documents sent as
  ``redundancy.corpus.index_documents`` chunks of 500 to one ``crd worker`` with 2
  processes (Celery over Redis ``--broker``), into a corpus on a fresh private redis-
  server; documents/s from the first chunk sent to the last done. Baseline: datasketch
  ``MinHashLSH`` with its Redis storage, fed the same documents by 2 processes (MinHash
  of the character 5-shingles, then inserted in an insertion session), plus the texts in
  a Redis hash (a user needs them to verify), on its own fresh redis-server. datasketch
  runs at settings that match our recall on this corpus (threshold 0.5, 128
  permutations; see the near-duplicate benchmark) and, for reference, its common ones
  (word 5-shingles, threshold 0.8).
* **queries**: ``find_similar`` (in-process, Redis on loopback) of ``--queries`` new
  documents: half the generator's next documents (new arrivals), half copies of indexed
  documents with 5, 15, 30 or 40% of their words edited (``near_copies``; 40% scores
  0.77-0.84, at the threshold's edge): p50/p99 latency in indexed mode and, on
  ``--exact-queries`` of them, exact mode. Baseline: the datasketch query (MinHash,
  ``lsh.query``, the candidates' texts from Redis, verified with rapidfuzz).
* **recall** against brute force (every document scoring >= 0.8 against each of
  ``--recall-queries`` queries, found by ``exact_pairs``), for both.
* **memory**: Redis memory per document beyond its text (the index's keys, by
  ``MEMORY USAGE``, less the normalised texts they hold; the event store's streams less
  the original texts), and the server's ``used_memory`` growth per document.
* **rebuild**: ``Corpus.rebuild(processes=2)`` (replay of the store into a fresh index,
  two shards at a time) in seconds.

The machine's load average is recorded with each size: on a shared machine every
figure here moves with it.

Writes ``benchmarks/results/corpus.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_result
from benchmarks.corpora import NEAR_COPY_SHARES, near_copies, synthetic_corpus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.procs: the private servers shared with the tests

from tests.procs import PrivateRedis  # noqa: E402

THRESHOLD = 0.8
CHUNK = 500
IN_FLIGHT = 8
DATASKETCH = {
    "matched": {"shingles": "char5", "threshold": 0.5, "num_perm": 128},
    "common": {"shingles": "word5", "threshold": 0.8, "num_perm": 128},
}


def quantiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": round(float(np.quantile(ms, 0.5)), 3),
        "p99_ms": round(float(np.quantile(ms, 0.99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "count": len(ms),
    }


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children so far."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def used_memory(url: str) -> int:
    import redis

    return int(redis.Redis.from_url(url).info("memory")["used_memory"])


# --- ours --------------------------------------------------------------------------------


def start_worker(env: dict[str, str], concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "redundancy", "worker", f"--concurrency={concurrency}",
         "-Q", "corpus", "--loglevel=WARNING", "--without-mingle", "--without-gossip",
         f"--hostname=bench-corpus-{os.getpid()}@%h"],
        env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def index_with_worker(
    name: str, items: list[dict[str, str]], pids: Sequence[int], log: Callable[[str], None]
) -> tuple[float, float]:
    """Seconds to index ``items`` as chunk tasks, ``IN_FLIGHT`` ahead (the CLI's way), and
    the CPU seconds the processes ``pids`` (worker tree, redis-server) spent meanwhile."""
    from redundancy.tasks import index_documents

    index_documents.delay(name, []).get(timeout=120)  # the worker is up and connected
    pending: deque[Any] = deque()
    done = 0
    cpu = sum(tree_cpu(p) for p in pids)
    started = time.perf_counter()
    for start in range(0, len(items), CHUNK):
        pending.append(index_documents.delay(name, items[start : start + CHUNK]))
        while len(pending) >= IN_FLIGHT:
            done += pending.popleft().get(timeout=600)["indexed"]
    while pending:
        done += pending.popleft().get(timeout=600)["indexed"]
    seconds = time.perf_counter() - started
    cpu = sum(tree_cpu(p) for p in pids) - cpu
    if done != len(items):
        raise RuntimeError(f"indexed {done} of {len(items)} documents")
    log(
        f"  ours: indexed {len(items):,} in {seconds:.1f} s ({len(items) / seconds:,.0f}/s), "
        f"{cpu / len(items) * 1e6:,.0f} us CPU per document"
    )
    return seconds, cpu


def index_memory(url: str, texts: Sequence[str], originals: Sequence[str]) -> dict[str, Any]:
    """Bytes per document of the index beyond its normalised text, and of the store
    beyond the original text (``MEMORY USAGE`` of every key, by kind)."""
    import redis

    client = redis.Redis.from_url(url)
    names = list(client.scan_iter(count=10_000))
    pipe = client.pipeline(transaction=False)
    for key in names:
        pipe.memory_usage(key, samples=0)
    sizes = pipe.execute()
    store = sum(s for k, s in zip(names, sizes, strict=True) if k.endswith(b":events"))
    index = sum(s for k, s in zip(names, sizes, strict=True) if not k.endswith(b":events"))
    normalised = sum(len(t.encode()) for t in texts)
    original = sum(len(t.encode()) for t in originals)
    n = len(texts)
    return {
        "keys": len(names),
        "index_bytes_per_doc_beyond_text": round((index - normalised) / n, 1),
        "store_bytes_per_doc_beyond_text": round((store - original) / n, 1),
        "text_bytes_per_doc": round(original / n, 1),
    }


def brute_force(queries: list[str], texts: list[str]) -> list[set[int]]:
    """Every document scoring >= THRESHOLD against each query: the project's exact mode
    (``exact_pairs``, which returns exactly what scoring every pair returns, as its tests
    check), because scoring 150 x 100,000 pairs one by one takes half an hour here."""
    from redundancy.core.bounds import exact_pairs

    found = exact_pairs(queries, texts, algorithm="ratio", threshold=THRESHOLD, workers=-1)
    out: list[set[int]] = [set() for _ in queries]
    for q, d in zip(found.left.tolist(), found.right.tolist(), strict=True):
        out[q].add(d)
    return out


def recall(found: list[set[int]], truth: list[set[int]]) -> dict[str, Any]:
    pairs = sum(len(t) for t in truth)
    hits = sum(len(f & t) for f, t in zip(found, truth, strict=True))
    false = sum(len(f - t) for f, t in zip(found, truth, strict=True))
    return {
        "true_pairs": pairs,
        "found": hits,
        "false": false,
        "recall": hits / pairs if pairs else 1.0,
    }


def recall_by(
    found: list[set[int]], truth: list[set[int]], kinds: list[str]
) -> dict[str, dict[str, Any]]:
    """``recall`` for each kind of query (zip stops at the shorter list)."""
    return {
        kind: recall(
            [f for f, k in zip(found, kinds, strict=False) if k == kind],
            [t for t, k in zip(truth, kinds, strict=False) if k == kind],
        )
        for kind in sorted(set(kinds))
    }


def run_ours(
    n: int, ids: list[str], texts: list[str], queries: list[str], args: argparse.Namespace,
    log: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    from redundancy.config import get_settings
    from redundancy.core.text import normalise
    from redundancy.corpus import create_corpus
    from redundancy.corpus.connection import reset_clients

    server = PrivateRedis(Path(tempfile.mkdtemp(prefix="bench-corpus-")))
    server.start()
    try:
        os.environ["CORPUS_REDIS_URL"] = server.url
        get_settings.cache_clear()
        reset_clients()
        base = used_memory(server.url)
        corpus = create_corpus(f"bench{n}", threshold=THRESHOLD, bands=args.bands)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        worker = start_worker(
            env, args.concurrency, Path(tempfile.gettempdir()) / f"bench-corpus-{n}.log"
        )
        try:
            items = [{"id": i, "text": t} for i, t in zip(ids, texts, strict=True)]
            assert server.proc is not None
            seconds, cpu = index_with_worker(corpus.name, items, [worker.pid, server.proc.pid], log)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
        grown = used_memory(server.url) - base
        normalised = [normalise(t) for t in texts]
        memory = index_memory(server.url, normalised, texts)
        memory["used_memory_per_doc"] = round(grown / n, 1)
        log(f"  ours: memory {memory}")

        latencies, found = [], []
        index_of = {doc_id: i for i, doc_id in enumerate(ids)}
        corpus.find_similar(queries[0])  # warm: connection, scripts
        for query in queries:
            began = time.perf_counter()
            result = corpus.find_similar(query, limit=10_000)
            latencies.append(time.perf_counter() - began)
            found.append({index_of[m.id] for m in result.matches})
        indexed = quantiles(latencies)
        log(f"  ours: indexed query {indexed}")
        exact_latencies, exact_found = [], []
        for query in queries[: args.exact_queries]:
            began = time.perf_counter()
            result = corpus.find_similar(query, limit=10_000, mode="exact")
            exact_latencies.append(time.perf_counter() - began)
            exact_found.append({index_of[m.id] for m in result.matches})
        exact = quantiles(exact_latencies)
        log(f"  ours: exact query {exact}")

        import resource

        def own_cpu() -> float:
            me = resource.getrusage(resource.RUSAGE_SELF)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

        cpu_before = own_cpu() + tree_cpu(server.proc.pid)
        began = time.perf_counter()
        corpus.rebuild(processes=args.concurrency)
        rebuild = time.perf_counter() - began
        rebuild_cpu = own_cpu() + tree_cpu(server.proc.pid) - cpu_before
        log(f"  ours: rebuild {rebuild:.1f} s, {rebuild_cpu:.1f} CPU s")
        return {
            "index_seconds": round(seconds, 2),
            "index_docs_per_s": round(n / seconds, 1),
            "index_cpu_us_per_doc": round(cpu / n * 1e6, 1),
            "query_indexed": indexed,
            "query_exact": exact,
            "found": found,
            "exact_found": exact_found,
            "memory": memory,
            "rebuild_seconds": round(rebuild, 2),
            "rebuild_cpu_seconds": round(rebuild_cpu, 2),
            "params": corpus.config.params.model_dump(),
            "shards": corpus.config.shards,
        }
    finally:
        reset_clients()
        server.stop()


# --- datasketch ---------------------------------------------------------------------------


def _grams(text: str, shingles: str) -> list[bytes]:
    if shingles == "char5":
        return [text[i : i + 5].encode() for i in range(max(1, len(text) - 4))]
    words = text.split()
    return [" ".join(words[i : i + 5]).encode() for i in range(max(1, len(words) - 4))]


def _lsh(url: str, settings: dict[str, Any], basename: bytes) -> Any:
    from datasketch import MinHashLSH

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    config = {"type": "redis", "basename": basename, "redis": {"host": "127.0.0.1", "port": port}}
    return MinHashLSH(
        threshold=settings["threshold"], num_perm=settings["num_perm"], storage_config=config
    )


def _datasketch_insert(job: tuple[str, dict[str, Any], bytes, list[str], list[str]]) -> None:
    import redis
    from datasketch import MinHash

    url, settings, basename, ids, texts = job
    lsh = _lsh(url, settings, basename)
    client = redis.Redis.from_url(url)
    hashes = MinHash.bulk(
        (_grams(t, settings["shingles"]) for t in texts), num_perm=settings["num_perm"]
    )
    with lsh.insertion_session(buffer_size=50_000) as session:
        for doc_id, minhash in zip(ids, hashes, strict=True):
            session.insert(doc_id, minhash)
    pipe = client.pipeline(transaction=False)
    for doc_id, text in zip(ids, texts, strict=True):
        pipe.hset(basename + b"texts", doc_id, text)
    pipe.execute()


def run_datasketch(
    n: int, ids: list[str], texts: list[str], queries: list[str], settings: dict[str, Any],
    args: argparse.Namespace, log: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    import redis
    from datasketch import MinHash
    from rapidfuzz import fuzz, process

    from redundancy.core.text import normalise

    server = PrivateRedis(Path(tempfile.mkdtemp(prefix="bench-datasketch-")))
    server.start()
    try:
        base = used_memory(server.url)
        basename = b"ds"
        normalised = [normalise(t) for t in texts]
        half = (n + 1) // 2
        jobs = [
            (server.url, settings, basename, ids[:half], normalised[:half]),
            (server.url, settings, basename, ids[half:], normalised[half:]),
        ]
        import resource

        assert server.proc is not None
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        redis_cpu = tree_cpu(server.proc.pid)
        began = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(args.concurrency) as pool:
            pool.map(_datasketch_insert, jobs)
        seconds = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) + (
            tree_cpu(server.proc.pid) - redis_cpu
        )
        grown = used_memory(server.url) - base
        log(f"  datasketch {settings}: inserted {n:,} in {seconds:.1f} s ({n / seconds:,.0f}/s)")
        lsh = _lsh(server.url, settings, basename)
        client = redis.Redis.from_url(server.url)
        index_of = {doc_id: i for i, doc_id in enumerate(ids)}
        latencies, found = [], []
        for query in queries:
            began = time.perf_counter()
            norm = normalise(query)
            minhash = MinHash(num_perm=settings["num_perm"])
            minhash.update_batch(_grams(norm, settings["shingles"]))
            keys = [k.decode() if isinstance(k, bytes) else k for k in lsh.query(minhash)]
            matched: set[int] = set()
            if keys:
                candidates = [t.decode() for t in client.hmget(basename + b"texts", keys)]
                scores = process.cdist(
                    [norm], candidates, scorer=fuzz.ratio, processor=None, dtype=np.float64
                )[0]
                matched = {
                    index_of[k]
                    for k, s in zip(keys, scores.tolist(), strict=True)
                    if s / 100 >= THRESHOLD
                }
            latencies.append(time.perf_counter() - began)
            found.append(matched)
        query = quantiles(latencies)
        log(f"  datasketch: query {query}")
        text_bytes = sum(len(t.encode()) for t in normalised)
        return {
            "settings": settings,
            "index_seconds": round(seconds, 2),
            "index_docs_per_s": round(n / seconds, 1),
            "index_cpu_us_per_doc": round(cpu / n * 1e6, 1),
            "query": query,
            "found": found,
            "used_memory_per_doc_beyond_text": round((grown - text_bytes) / n, 1),
        }
    finally:
        server.stop()


# --- the run ------------------------------------------------------------------------------


def measure(n: int, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from redundancy.core.text import normalise

    fresh = args.queries // 2
    data = synthetic_corpus(n + fresh, seed=14)
    ids, texts = data.ids[:n], data.texts[:n]
    copies = [t for _, t in near_copies(texts, args.queries - fresh, seed=n)]
    queries = [q for pair in zip(data.texts[n:], copies, strict=False) for q in pair]
    kinds = [
        "new document" if i % 2 == 0 else f"copy, {NEAR_COPY_SHARES[(i // 2) % 4]:.0%} edited"
        for i in range(len(queries))
    ]
    log(f"== {n:,} documents, {len(queries)} queries, load average {os.getloadavg()}")
    load_before = os.getloadavg()
    ours = run_ours(n, ids, texts, queries, args, log)
    truth = brute_force(
        [normalise(q) for q in queries[: args.recall_queries]], [normalise(t) for t in texts]
    )
    out: dict[str, Any] = {
        "documents": n,
        "ours": ours,
        "load_average": [load_before, os.getloadavg()],
    }
    r = args.recall_queries
    ours["recall_by_query"] = recall_by(ours["found"][:r], truth, kinds)
    ours["recall"] = recall(ours.pop("found")[:r], truth)
    exact_truth = truth[: args.exact_queries]
    ours["exact_recall"] = recall(ours.pop("exact_found")[: len(exact_truth)], exact_truth)
    log(f"  ours: recall {ours['recall']}, exact {ours['exact_recall']}")
    log(f"  ours: recall by query {ours['recall_by_query']}")
    if not args.no_datasketch and n <= args.datasketch_max:
        for label, settings in DATASKETCH.items():
            if label == "common" and n > args.common_max:
                continue
            ds = run_datasketch(n, ids, texts, queries, settings, args, log)
            ds["recall_by_query"] = recall_by(ds["found"][:r], truth, kinds)
            ds["recall"] = recall(ds.pop("found")[:r], truth)
            log(f"  datasketch {label}: recall {ds['recall']}")
            out[f"datasketch_{label}"] = ds
        base = out.get("datasketch_matched")
        if base:
            out["ratios"] = {
                "index_docs_per_s_vs_datasketch": round(
                    ours["index_docs_per_s"] / base["index_docs_per_s"], 2
                ),
                "index_cpu_per_doc_datasketch_over_ours": round(
                    base["index_cpu_us_per_doc"] / ours["index_cpu_us_per_doc"], 2
                ),
                "memory_per_doc_datasketch_over_ours": round(
                    base["used_memory_per_doc_beyond_text"]
                    / ours["memory"]["index_bytes_per_doc_beyond_text"],
                    2,
                ),
                "query_p50_datasketch_over_ours": round(
                    base["query"]["p50_ms"] / ours["query_indexed"]["p50_ms"], 2
                ),
                "query_p99_datasketch_over_ours": round(
                    base["query"]["p99_ms"] / ours["query_indexed"]["p99_ms"], 2
                ),
            }
            log(f"  ratios {out['ratios']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/10",
                        help="Celery broker and result backend for the worker")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--exact-queries", type=int, default=10)
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--datasketch-max", type=int, default=100_000)
    parser.add_argument("--common-max", type=int, default=10_000,
                        help="largest size datasketch's common settings run at")  # fmt: skip
    parser.add_argument("--no-datasketch", action="store_true")
    parser.add_argument("--bands", type=int, default=None, help="LSH bands (default: ours)")
    parser.add_argument("--name", default="corpus", help="results file name (without .json)")
    args = parser.parse_args()

    os.environ.update(CELERY_BROKER_URL=args.broker, CELERY_RESULT_BACKEND=args.broker)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop private servers on kill
    import redis

    redis.Redis.from_url(args.broker).flushdb()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    runs = [measure(int(n), args, log) for n in args.sizes.split(",")]
    import datasketch

    write_result(
        args.name,
        {
            "threshold": THRESHOLD,
            "chunk": CHUNK,
            "worker_concurrency": args.concurrency,
            "queries": args.queries,
            "exact_queries": args.exact_queries,
            "recall_queries": args.recall_queries,
            "versions": {"datasketch": getattr(datasketch, "__version__", "?")},
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
