"""``POST /v1/analyses`` through the whole gateway against what a user would run instead,
in the same run: requests/s and p50/p99 latency for a fixed number of requests from one
loopback client.

    python -m benchmarks.api [--requests 3000] [--concurrency 16] [--redis redis://127.0.0.1:6379/12]

* **gateway**: ``POST /v1/analyses`` -- API key lookup, GCRA rate limit (set high enough
  never to refuse), daily quota, ``.delay()``, job ownership record, correlation id,
  HTTP metrics, access log and OpenTelemetry tracing at 10 % sampling (spans exported to
  a local OTLP sink).
* **bare route**: ``POST /bare/analyses`` in the same uvicorn process and Celery app: a
  plain FastAPI route that only calls ``analyze_content.delay(text)`` -- no auth, no
  limits, no middleware (what one writes without us).
* **Flower**: ``POST /api/task/async-apply/redundancy.analyze_content`` with basic auth
  (Celery's own HTTP front door), on the same broker.

Each publishes one task to the Redis broker; no worker consumes (only the front door is
measured). Rounds are interleaved so drift hits every contender alike; the best round
of each counts (the medians are written too). The client is httpx with a keep-alive pool
on loopback, in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.common import synthetic_docs, write_result
from redundancy.schemas import AnalyzeRequest

ROOT = Path(__file__).resolve().parents[1]
BARE_PATH = "/bare/analyses"


def bench_app() -> Any:
    """The gateway plus the bare route, dispatched by path in one ASGI app (uvicorn
    ``--factory benchmarks.api:bench_app``): the bare route bypasses every middleware."""
    from fastapi import FastAPI

    from redundancy.api import create_api

    gateway = create_api()
    bare = FastAPI()
    bare.post(BARE_PATH, status_code=202)(bare_submit)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        target = bare if scope.get("path") == BARE_PATH else gateway
        await target(scope, receive, send)

    return app


def bare_submit(body: AnalyzeRequest) -> dict[str, str]:
    """The baseline: validate the body, ``.delay()``, answer the id (a sync route: FastAPI
    runs it in its thread pool, as it runs our publish)."""
    from redundancy.tasks import analyze_content

    return {"job_id": analyze_content.delay(body.text).id}


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts spans and drops them."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], log: Path, auth: Any = None) -> None:
    import httpx

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, auth=auth, timeout=2).status_code < 500:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not up:\n{log.read_text()}")


async def load(
    url: str, bodies: list[dict[str, Any]], concurrency: int, **client: Any
) -> dict[str, Any]:
    """POST every body (``concurrency`` at a time); rate and latency percentiles."""
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60, **client) as http:

        async def worker() -> None:
            for body in queue:
                began = time.perf_counter()
                response = await http.post(url, json=body)
                latencies.append(time.perf_counter() - began)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(bodies),
        "statuses": statuses,
        "req_per_s": len(bodies) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--api-redis", default=None, help="REDIS_URL of the API (default: db+1)")
    args = parser.parse_args()
    base, _, db = args.redis.rpartition("/")
    api_redis = args.api_redis or f"{base}/{int(db) + 1}"

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_", "OTEL_"))},
        "CELERY_BROKER_URL": args.redis,
        "CELERY_RESULT_BACKEND": args.redis,
        "REDIS_URL": api_redis,
        "PYTHONPATH": str(ROOT),
        "API_RATE_LIMIT": "1000000",
        "API_RATE_BURST": "1000000",
        "API_QUOTA_DOCUMENTS": "1000000000",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "LOG_FORMAT": "json",
        "FLOWER_BASIC_AUTH": "bench:secret",
    }
    import redis

    for url in (args.redis, api_redis):
        redis.Redis.from_url(url).flushdb()
    api_port, flower_port = free_port(), free_port()
    logs = {name: Path("/tmp") / f"bench-{name}-{os.getpid()}.log" for name in ("api", "flower")}
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "benchmarks.api:bench_app",
            "--port",
            str(api_port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
        stdout=logs["api"].open("w"),
        stderr=subprocess.STDOUT,
    )
    flower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "redundancy.workers",
            "flower",
            f"--port={flower_port}",
            "--address=127.0.0.1",
            "--logging=warning",
        ],
        env=env,
        cwd=ROOT,
        stdout=logs["flower"].open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        api_url, flower_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{flower_port}"
        wait_up(f"{api_url}/healthz", api, logs["api"])
        wait_up(f"{flower_url}/api/workers", flower, logs["flower"], auth=("bench", "secret"))
        out = subprocess.run(
            [sys.executable, "-m", "redundancy", "keys", "create", "bench"],
            env=env, cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        key = out.stdout.strip()
        texts = iter(synthetic_docs(args.requests * (3 * args.rounds + 3), 300, seed=15))

        def bodies(flower_shape: bool) -> list[dict[str, Any]]:
            chunk = [next(texts) for _ in range(args.requests)]
            return [{"args": [t]} if flower_shape else {"text": t} for t in chunk]

        contenders = {
            "gateway": (f"{api_url}/v1/analyses", False,
                        {"headers": {"Authorization": f"Bearer {key}"}}),
            "bare_route": (f"{api_url}{BARE_PATH}", False, {}),
            "flower": (f"{flower_url}/api/task/async-apply/redundancy.analyze_content", True,
                       {"auth": ("bench", "secret")}),
        }  # fmt: skip
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
        for warm in (True, *([False] * args.rounds)):
            for name, (url, shape, client) in contenders.items():
                result = asyncio.run(load(url, bodies(shape), args.concurrency, **client))
                if not warm:
                    rounds[name].append(result)
                print(name, "warm-up" if warm else "", result, flush=True)
    finally:
        for proc in (api, flower):
            proc.terminate()
            proc.wait(timeout=30)
        sink.shutdown()
        for url in (args.redis, api_redis):
            redis.Redis.from_url(url).flushdb()
    best = {name: max(r, key=lambda x: x["req_per_s"]) for name, r in rounds.items()}
    median = {name: statistics.median(x["req_per_s"] for x in r) for name, r in rounds.items()}
    for name, result in best.items():
        ok = result["statuses"].get(202, 0) + result["statuses"].get(200, 0)
        assert ok == result["requests"], f"{name}: {result['statuses']}"
    write_result(
        "api",
        {
            "requests_per_round": args.requests,
            "concurrency": args.concurrency,
            "text_chars": 300,
            "uvicorn_workers": 1,
            "trace_sampling": 0.1,
            "rounds": rounds,
            "best": best,
            "ratio_gateway_vs_bare_route": best["gateway"]["req_per_s"]
            / best["bare_route"]["req_per_s"],
            "ratio_gateway_vs_flower": best["gateway"]["req_per_s"] / best["flower"]["req_per_s"],
            "median_req_per_s": median,
            "median_ratio_gateway_vs_bare_route": median["gateway"] / median["bare_route"],
            "median_ratio_gateway_vs_flower": median["gateway"] / median["flower"],
        },
    )


if __name__ == "__main__":
    main()
