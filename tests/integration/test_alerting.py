"""What alerts and dashboards read, from real workers: `celery_worker_up` follows the
broker connection; every query of the community (celery-mixin) dashboards and of ours
returns data when a real Prometheus scrapes a real worker."""

from __future__ import annotations

import re
import time

import pytest

from tests.services import (
    REDIS_BACKEND_DB,
    REDIS_CACHE_DB,
    Cluster,
    PrivatePrometheus,
    flush_db,
    free_port,
    redis_url,
    sample,
    scrape,
    started,
)
from tests.unit.test_deploy import MIXIN_DASHBOARDS, dashboard_queries

pytestmark = pytest.mark.integration

PROBE = ("-I", "tests.integration.obs_probe")
ANALYZE = "redundancy.analyze_content"
ONLY_ON_TROUBLE = {"Event throughput by broker"}
"""Panels of ours with data only when something goes wrong (events failing to publish:
the test's worker publishes to no event broker)."""


def _worker_up(url: str, hostname: str) -> float | None:
    try:
        return sample(scrape(url, timeout=5), "celery_worker_up", hostname=hostname)
    except OSError:
        return None


def _wait_worker_up(url: str, hostname: str, want: float, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (seen := _worker_up(url, hostname)) != want:
        assert time.monotonic() < deadline, f"celery_worker_up stayed {seen}, wanted {want}"
        time.sleep(0.3)


def test_worker_up_is_0_while_the_worker_has_lost_its_broker(private_redis, redis_server, tmp_path):
    # Given a worker whose broker is a private Redis, serving /metrics
    backend = redis_url(REDIS_BACKEND_DB)
    flush_db(backend)
    cluster = Cluster(private_redis.url, backend, tmp_path)
    port = free_port()
    try:
        worker = cluster.start_worker(1, (f"--metrics-port={port}",), METRICS_INTERVAL="0.5")
        url = f"http://127.0.0.1:{port}/metrics"
        _wait_worker_up(url, worker.hostname, 1)

        # When the broker dies (killed), Then the worker reports itself down
        private_redis.stop()
        _wait_worker_up(url, worker.hostname, 0)

        # and up again once the broker is back (same port) and it has reconnected
        private_redis.start()
        _wait_worker_up(url, worker.hostname, 1)
    finally:
        cluster.stop()


def _substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variables in a query, as the dashboard would send it."""
    return re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], expr)


def test_every_dashboard_query_returns_data_from_a_real_worker(redis_cluster, tmp_path):
    # Given a worker with metrics on, scraped by a real Prometheus as job "celery" (the
    # name celery-mixin's selector job=~".*celery.*" expects)
    port = free_port()
    flush_db(redis_url(REDIS_CACHE_DB))
    redis_cluster.start_worker(
        2,
        (f"--metrics-port={port}", *PROBE),
        METRICS_INTERVAL="0.5",
        REDIS_CACHE_URL=redis_url(REDIS_CACHE_DB),
    )
    prometheus = started(PrivatePrometheus(tmp_path, [f"127.0.0.1:{port}"]))
    try:
        start = time.time()
        _wait_for_query(prometheus, 'up{job="celery"} == 1', start)

        # When a producer (not a worker) runs analyses (one cached, one failing), a
        # comparison, a batch and a task that is retried once -- twice, a few scrapes
        # apart, as on a worker that has been running (a counter's first increment is
        # invisible to rate() and increase())
        workload = """
            import json
            from redundancy.tasks import analyze_content, compare_texts, process_batch
            from tests.integration.obs_probe import flaky
            for text in ["One. One. Two.", "A b c. A b c.", "One. One. Two."]:
                analyze_content.delay(text).get(timeout=60)
            try:
                analyze_content.delay("  ").get(timeout=60)
            except Exception:
                pass
            compare_texts.delay("hello world", "hello world!").get(timeout=60)
            process_batch.delay(["Same text. Same text."] * 3 + ["Other."]).get(timeout=60)
            print(json.dumps(flaky.delay().get(timeout=60)))
        """
        for round_ in (1, 2):
            redis_cluster.producer(workload, BATCH_CHUNK_SIZE="4")
            # (the producer's own sends reach the worker's endpoint as task-sent events;
            # then a few more scrapes, so rate() and irate() see the change)
            sent = 'sum(celery_task_sent_total{job="celery",name="redundancy.compare_texts"})'
            _wait_for_query(prometheus, f"{sent} == {round_}", start, points=4)

        # Then every panel of the community dashboards and of ours shows data
        variables = {
            "cluster": "", "namespace": "", "job": "celery", "queue_name": ".*", "queue": ".*",
            "api_job": ".*", "__rate_interval": "15s", "__range": "10m",
        }  # fmt: skip
        empty = []
        for name in ("content-redundancy-detector.json", *MIXIN_DASHBOARDS):
            # ours with every task ("All"), the by-task dashboard with one task
            task = ".*" if name == "content-redundancy-detector.json" else ANALYZE
            panels: dict[str, list[str]] = {}
            for title, expr in dashboard_queries(name):
                panels.setdefault(title, []).append(_substitute(expr, {**variables, "task": task}))
            for title, queries in panels.items():
                if title in ONLY_ON_TROUBLE or any("http_request" in q for q in queries):
                    continue  # (the HTTP API's panels: tests/integration/test_api.py's metrics)
                values = [
                    v
                    for query in queries
                    for series in prometheus.query_range(query, start, time.time())
                    for _t, v in series["values"]
                    if v not in ("NaN", "+Inf", "-Inf")
                ]
                if not values:
                    empty.append(f"{name}: {title}: {' '.join(queries[0].split())}")
        assert not empty, "\n".join(empty)
    finally:
        prometheus.stop()


def _wait_for_query(
    prometheus: PrivatePrometheus, expr: str, start: float, points: int = 1
) -> None:
    """Until ``expr`` has data at ``points`` evaluation steps (1 s apart) since ``start``."""
    deadline = time.monotonic() + 90
    while True:
        series = prometheus.query_range(expr, start, time.time())
        if sum(len(s["values"]) for s in series) >= points:
            return
        assert time.monotonic() < deadline, f"no data for {expr}"
        time.sleep(0.5)
