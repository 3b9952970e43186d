"""Corpus queries over HTTP against the same queries in-process, in one run.

    python -m benchmarks.api_corpus                     # 10,000 documents, 300 queries
    python -m benchmarks.api_corpus --documents 2000 --queries 100

A corpus of ``--documents`` synthetic ~1,500-character documents (``benchmarks/corpora.py``,
10% near copies) is indexed in-process into a private redis-server, owned by one API
user. ``--queries`` queries -- half new documents, half edited copies of indexed ones
(``near_copies``: 5-40% of their words edited) -- then run:

* **in-process**: ``Corpus.find_similar`` one after another (the baseline: what a Python
  caller of ``redundancy.corpus`` pays);
* **HTTP, 1 client**: ``POST /v1/corpora/{name}/query`` through ``crd serve`` (one
  uvicorn process: API key lookup, GCRA rate limit and daily quota set high enough never
  to refuse, ownership, metrics, correlation id, access log), one request at a time on
  one keep-alive connection -- the per-query overhead of the gateway;
* **HTTP, ``--concurrency`` clients**: the same requests, that many at a time
  (throughput of one API process).

Every HTTP answer is checked against the in-process answer for the same query. The
machine's load average is recorded: on a shared machine every figure moves with it.
Writes ``benchmarks/results/api_corpus.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.api import free_port, load, wait_up
from benchmarks.common import stop_process_group, write_result
from benchmarks.corpora import near_copies, synthetic_corpus
from benchmarks.corpus import quantiles

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.procs import PrivateRedis  # noqa: E402

USER = "bench"
CORPUS = "bench-api"
THRESHOLD = 0.8
CHUNK = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    from redundancy.config import get_settings
    from redundancy.corpus import create_corpus
    from redundancy.corpus.connection import reset_clients

    server = PrivateRedis(Path(tempfile.mkdtemp(prefix="bench-api-corpus-")))
    server.start()
    api: subprocess.Popen[bytes] | None = None
    try:
        # the corpus in db 0, the API's keys and limits in db 1 of the same private server
        corpus_url, api_url_redis = server.url, server.url.rsplit("/", 1)[0] + "/1"
        os.environ["CORPUS_REDIS_URL"] = corpus_url
        get_settings.cache_clear()
        reset_clients()
        docs = synthetic_corpus(args.documents + args.queries // 2, seed=7)
        ids, texts = docs.ids[: args.documents], docs.texts[: args.documents]
        corpus = create_corpus(CORPUS, threshold=THRESHOLD, owner=USER)
        began = time.perf_counter()
        items = [{"id": i, "text": t} for i, t in zip(ids, texts, strict=True)]
        for start in range(0, len(items), CHUNK):
            corpus.index_documents(items[start : start + CHUNK])
        print(f"indexed {len(items):,} documents in {time.perf_counter() - began:.1f} s")
        fresh = docs.texts[args.documents :]
        copies = [t for _, t in near_copies(texts, args.queries - len(fresh), seed=7)]
        queries = [q for pair in zip(fresh, copies, strict=False) for q in pair]
        queries += fresh[len(copies) :] + copies[len(fresh) :]

        corpus.find_similar(queries[0])  # warm: connection, scripts
        latencies, expected = [], []
        for text in queries:
            started = time.perf_counter()
            expected.append(corpus.find_similar(text).model_dump(mode="json"))
            latencies.append(time.perf_counter() - started)
        in_process = {**quantiles(latencies), "queries_per_s": len(queries) / sum(latencies)}
        print(f"in-process: {in_process}")

        env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("CELERY_", "REDIS_", "OTEL_", "API_"))},
            "CELERY_BROKER_URL": api_url_redis,
            "CELERY_RESULT_BACKEND": api_url_redis,
            "REDIS_URL": api_url_redis,
            "CORPUS_REDIS_URL": corpus_url,
            "PYTHONPATH": str(ROOT),
            "API_RATE_LIMIT": "1000000",
            "API_RATE_BURST": "1000000",
            "API_QUOTA_DOCUMENTS": "1000000000",
            "API_QUOTA_BYTES": str(1 << 40),
            "LOG_FORMAT": "json",
        }  # fmt: skip
        key = subprocess.run(
            [sys.executable, "-m", "redundancy", "keys", "create", USER],
            env=env, cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        port = free_port()
        log = Path(tempfile.gettempdir()) / f"bench-api-corpus-{os.getpid()}.log"
        api = subprocess.Popen(
            [sys.executable, "-m", "redundancy", "serve", "--port", str(port)],
            env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_up(f"{base}/healthz", api, log)
        url = f"{base}/v1/corpora/{CORPUS}/query"
        headers = {"Authorization": f"Bearer {key}"}
        bodies = [{"text": q} for q in queries]
        check_answers(url, headers, bodies, expected)
        one = asyncio.run(load(url, bodies, 1, headers=headers))
        many = asyncio.run(load(url, bodies, args.concurrency, headers=headers))
        print(f"HTTP, 1 client: {one}\nHTTP, {args.concurrency} clients: {many}")
        assert one["statuses"] == many["statuses"] == {200: len(bodies)}, (one, many)
        matches = [len(e["matches"]) for e in expected]
        path = write_result(
            "api_corpus",
            {
                "documents": args.documents,
                "queries": len(queries),
                "queries_with_matches": sum(1 for m in matches if m),
                "threshold": THRESHOLD,
                "in_process": in_process,
                "http_1_client": one,
                f"http_{args.concurrency}_clients": many,
                "gateway_overhead_p50_ms": round(one["p50_ms"] - in_process["p50_ms"], 3),
                "http_1_client_vs_in_process_qps": round(
                    one["req_per_s"] / in_process["queries_per_s"], 3
                ),
                "load_average": os.getloadavg(),
            },
        )
        print(f"wrote {path}")
    finally:
        if api is not None:
            stop_process_group(api)
        server.stop()


def check_answers(
    url: str, headers: dict[str, str], bodies: list[dict[str, Any]], expected: list[Any]
) -> None:
    """Every HTTP answer equals the in-process one (else the comparison means nothing)."""
    import httpx

    with httpx.Client(headers=headers, timeout=60) as client:
        for body, want in zip(bodies, expected, strict=True):
            got = client.post(url, json=body)
            if got.status_code != 200 or got.json() != want:
                raise AssertionError(f"HTTP answer differs: {got.status_code} {got.text[:300]}")


if __name__ == "__main__":
    main()
