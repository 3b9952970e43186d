"""Cost of observability: tasks/s with metrics + tracing + JSON logs on, against the same
worker set-up with them off, in the same run.

    python -m benchmarks.observability [--tasks 500] [--rounds 3] [--redis redis://127.0.0.1:6379/12]
        [--parts metrics,tracing,json] [--sample-ratio 1.0] [--output /tmp/obs.json]

Two `crd worker`s (prefork, 2 processes each, INFO logging) run side by side on their
own queues of one Redis broker:

* off: no metrics port, no OTLP endpoint, text logs (the defaults);
* on:  ``--metrics-port`` (prometheus multiprocess files), ``--log-format json``, and
  OTLP/HTTP tracing to a local sink; the producer traces its publishes too.

Rounds alternate off/on so machine drift hits both alike; the best round of each counts.
CPU time per task (the worker's processes, and this producer process) is measured per
round too: it says where a difference comes from, and varies far less than tasks/s on a
shared machine; ``cpu_ratio_on_vs_off`` is the throughput ratio it implies when CPU is
the limit.
Measured for ``analyze_content`` (~300-character texts) and for a no-op task (Celery's
own cost per task, where a fixed per-task overhead shows most).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.procs import free_port

from benchmarks.common import synthetic_docs, write_result

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "crd-bench"


def _serve_sink(port: Any, requests: Any, received: Any) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length", 0))
            self.rfile.read(size)
            with requests.get_lock():
                requests.value += 1
                received.value += size
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port.value = server.server_address[1]
    server.serve_forever()


class OtlpSink:
    """Accepts OTLP/HTTP exports and counts them (the collector's place, on loopback), in
    a process of its own: the CPU it spends reading exports is nobody's tracing cost."""

    def __init__(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self._port, self._requests, self._bytes = (
            ctx.Value("i", 0),
            ctx.Value("q", 0),
            ctx.Value("q", 0),
        )
        self.process = ctx.Process(
            target=_serve_sink, args=(self._port, self._requests, self._bytes), daemon=True
        )
        self.process.start()
        deadline = time.monotonic() + 30
        while not self._port.value:
            if time.monotonic() > deadline:
                raise SystemExit("the OTLP sink did not start")
            time.sleep(0.01)
        self.endpoint = f"http://127.0.0.1:{self._port.value}"

    @property
    def requests(self) -> int:
        return int(self._requests.value)

    @property
    def bytes(self) -> int:
        return int(self._bytes.value)

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


def start_worker(
    env: dict[str, str], queue: str, concurrency: int, log: Path, extra: list[str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redundancy",
            "worker",
            f"--concurrency={concurrency}",
            f"--queues={queue}",
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
            f"--hostname=bench-{queue}-{os.getpid()}@%h",
            "-I",
            "benchmarks.noop_tasks",
            *extra,
        ],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """CPU time (user + system) of a worker: its main process and its pool processes."""
    import psutil

    main = psutil.Process(proc.pid)
    total = 0.0
    for p in [main, *main.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def write_elsewhere(path: Path, name: str, data: dict[str, Any]) -> Path:
    """A trial run's result outside benchmarks/results (which holds the published runs)."""
    data = {"benchmark": name, "when": datetime.now(UTC).isoformat(timespec="seconds"), **data}
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument(
        "--sample-ratio",
        type=float,
        default=1.0,
        help="trace sampling (OTEL_TRACES_SAMPLER=parentbased_traceidratio)",
    )
    parser.add_argument(
        "--parts",
        default="metrics,tracing,json",
        help="what 'on' turns on (a subset shows each part's cost)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="write the JSON here instead of benchmarks/results/observability<variant>.json",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "WORKER_METRICS", "LOG_FORMAT", "PROMETHEUS"))
    }
    base_env.update(
        CELERY_BROKER_URL=args.redis, CELERY_RESULT_BACKEND=args.redis, PYTHONPATH=str(ROOT)
    )
    os.environ.update(CELERY_BROKER_URL=args.redis, CELERY_RESULT_BACKEND=args.redis)
    import redis
    from celery import group

    from benchmarks.noop_tasks import noop
    from redundancy.observability.tracing import configure_tracing, shutdown_tracing
    from redundancy.tasks import analyze_content

    redis.Redis.from_url(args.redis).flushdb()
    sink = OtlpSink()
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="crd-bench-obs-"))
    on_env = {**base_env, "SERVICE_NAME": SERVICE, "METRICS_DIR": str(tmp / "metrics")}
    on_args = [f"--metrics-port={port}"] if "metrics" in parts else []
    if "tracing" in parts:
        on_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
        if args.sample_ratio < 1.0:
            sampler = {
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": str(args.sample_ratio),
            }
            on_env.update(sampler)
            os.environ.update(sampler)  # the producer decides, the worker follows
    if "json" in parts:
        on_args.append("--log-format=json")
    workers = {
        "off": start_worker(base_env, "bench-off", args.concurrency, tmp / "off.log", []),
        "on": start_worker(on_env, "bench-on", args.concurrency, tmp / "on.log", on_args),
    }
    try:
        for mode in workers:  # waits for both workers to be ready
            noop.s("warm").set(queue=f"bench-{mode}").apply_async().get(timeout=120)
        texts = [
            ". ".join(d[i : i + 60] for i in range(0, len(d), 60)) + "."
            for d in synthetic_docs(args.tasks * (4 * args.rounds + 2), 300, seed=5)
        ]
        batches = iter(range(0, len(texts), args.tasks))

        cpu_ms: dict[str, dict[str, list[tuple[float, float]]]] = {}

        def run(task: Any, mode: str) -> float:
            start = next(batches)
            chunk = texts[start : start + args.tasks]
            if mode == "on" and "tracing" in parts:
                configure_tracing(SERVICE, sink.endpoint)
            try:
                worker_cpu, own_cpu = cpu_seconds(workers[mode]), time.process_time()
                began = time.perf_counter()
                group(task.s(t).set(queue=f"bench-{mode}") for t in chunk).apply_async().get(
                    timeout=600
                )
                rate = args.tasks / (time.perf_counter() - began)
                per_task = (
                    1000 * (cpu_seconds(workers[mode]) - worker_cpu) / args.tasks,
                    1000 * (time.process_time() - own_cpu) / args.tasks,
                )
                cpu_ms.setdefault(task.name, {}).setdefault(mode, []).append(per_task)
                return rate
            finally:
                shutdown_tracing()

        run(analyze_content, "off"), run(analyze_content, "on")  # warm-up
        rates: dict[str, dict[str, list[float]]] = {
            "analyze_content": {"off": [], "on": []},
            "noop": {"off": [], "on": []},
        }
        for _ in range(args.rounds):
            for name, task in (("analyze_content", analyze_content), ("noop", noop)):
                for mode in ("off", "on"):
                    rates[name][mode].append(run(task, mode))
        scraped = ""
        if "metrics" in parts:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                scraped = r.read().decode()
        succeeded = sum(
            float(line.rsplit(" ", 1)[1])
            for line in scraped.splitlines()
            if line.startswith("celery_task_succeeded_total{")
        )
        json_lines = sum(1 for _ in (tmp / "on.log").open())
    finally:
        for worker in workers.values():
            worker.terminate()
        for worker in workers.values():
            worker.wait(timeout=60)
        sink.stop()
    best = {name: {mode: max(v) for mode, v in by_mode.items()} for name, by_mode in rates.items()}
    variant = "".join(
        [
            f"_sampled_{args.sample_ratio:g}" if args.sample_ratio < 1.0 else "",
            f"_{'+'.join(sorted(parts))}" if parts != {"metrics", "tracing", "json"} else "",
        ]
    )
    cpu = {
        name: {
            mode: {
                "worker": statistics.median(w for w, _ in v),
                "producer": statistics.median(p for _, p in v),
            }
            for mode, v in by_mode.items()
        }
        for name, by_mode in cpu_ms.items()
    }
    (write_result if args.output is None else partial(write_elsewhere, args.output))(
        f"observability{variant}",
        {
            "broker": "redis",
            "pool": "prefork",
            "concurrency": args.concurrency,
            "tasks_per_round": args.tasks,
            "rounds": args.rounds,
            "text_chars": 300,
            "worker_loglevel": "INFO",
            "on": sorted(parts),
            "trace_sample_ratio": args.sample_ratio,
            "parts": {
                "metrics": "worker metrics port (prometheus multiprocess files)",
                "tracing": "OTLP/HTTP tracing in worker and producer, to a loopback sink",
                "json": "JSON log lines (INFO: two lines per task)",
            },
            "off": "defaults: no metrics port, no OTLP endpoint, text logs",
            "tasks_per_s": rates,
            "best_tasks_per_s": best,
            "ratio_on_vs_off": {name: b["on"] / b["off"] for name, b in best.items()},
            "cpu_ms_per_task_median": cpu,
            # What the tasks/s ratio is when CPU is the limit (it is, on 2 cores): CPU per
            # task of worker + producer, off over on. Steadier than tasks/s on a busy machine.
            "cpu_ratio_on_vs_off": {
                name: sum(by_mode["off"].values()) / sum(by_mode["on"].values())
                for name, by_mode in cpu.items()
            },
            "worker_cpu_ratio_on_vs_off": {
                name: by_mode["off"]["worker"] / by_mode["on"]["worker"]
                for name, by_mode in cpu.items()
            },
            "median_ratio_on_vs_off": {
                name: statistics.median(by_mode["on"]) / statistics.median(by_mode["off"])
                for name, by_mode in rates.items()
            },
            "checks": {
                "otlp_export_requests": sink.requests,
                "otlp_bytes": sink.bytes,
                "succeeded_counted_on_worker": succeeded,
                "worker_log_lines_on": json_lines,
            },
        },
    )


if __name__ == "__main__":
    main()
