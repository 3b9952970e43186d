"""End-to-end ``analyze_content`` throughput on a real Redis broker, against a no-op task
on the same broker, worker, pool and concurrency, in the same run.

    python -m benchmarks.e2e_tasks [--tasks 1000] [--concurrency 2] [--redis redis://127.0.0.1:6379/12]

Short texts (~300 characters, a few sentences), each distinct so nothing is shared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import synthetic_docs, write_result

ROOT = Path(__file__).resolve().parents[1]


def start_worker(env: dict[str, str], concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "redundancy.workers",
            "worker",
            "-I",
            "benchmarks.noop_tasks",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            "-Q",
            "analysis",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=WARNING",
            f"--hostname=bench-{os.getpid()}@%h",
        ],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()

    env = {
        **os.environ,
        "CELERY_BROKER_URL": args.redis,
        "CELERY_RESULT_BACKEND": args.redis,
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update(CELERY_BROKER_URL=args.redis, CELERY_RESULT_BACKEND=args.redis)
    import redis
    from celery import group

    from benchmarks.noop_tasks import noop
    from redundancy.tasks import analyze_content

    redis.Redis.from_url(args.redis).flushdb()
    log = Path("/tmp") / f"bench-worker-{os.getpid()}.log"
    worker = start_worker(env, args.concurrency, log)
    try:
        noop.delay("warm").get(timeout=60)  # waits for the worker to be ready
        texts = [
            ". ".join(d[i : i + 60] for i in range(0, len(d), 60)) + "."
            for d in synthetic_docs(args.tasks * (2 * args.rounds + 1), 300, seed=4)
        ]
        batches = iter(range(0, len(texts), args.tasks))

        def run(task: object) -> float:
            start = next(batches)
            chunk = texts[start : start + args.tasks]
            began = time.perf_counter()
            group(task.s(t) for t in chunk).apply_async().get(timeout=600)  # type: ignore[attr-defined]
            return args.tasks / (time.perf_counter() - began)

        run(analyze_content)  # warm-up: imports, caches, connections
        rates: dict[str, list[float]] = {"noop": [], "analyze_content": []}
        for _ in range(args.rounds):  # interleaved so drift hits both alike
            rates["noop"].append(run(noop))
            rates["analyze_content"].append(run(analyze_content))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    best = {k: max(v) for k, v in rates.items()}
    write_result(
        "e2e_tasks",
        {
            "broker": "redis",
            "pool": "prefork",
            "concurrency": args.concurrency,
            "tasks_per_round": args.tasks,
            "text_chars": 300,
            "tasks_per_s": rates,
            "best_tasks_per_s": best,
            "ratio_analyze_vs_noop": best["analyze_content"] / best["noop"],
        },
    )


if __name__ == "__main__":
    main()
