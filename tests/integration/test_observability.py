"""Ops on real workers: /metrics under prefork, traces producer -> worker, JSON logs with
the correlation id, queue lengths on both brokers, Flower."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from redundancy.observability.multiproc import pid_alive
from tests.services import ROOT, free_port, port_open, sample, scrape

pytestmark = pytest.mark.integration

PROBE = ("-I", "tests.integration.obs_probe")


def _wait_for_metric(url: str, metric: str, want: float, /, timeout: float = 30, **labels: str):
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if sample(samples, metric, **labels) == want or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def _wait_for_sent(url: str, name: str, want: float, timeout: float = 30) -> dict[str, float]:
    """``celery_task_sent_total`` summed by task name, once ``name`` reached ``want``."""
    deadline = time.monotonic() + timeout
    while True:
        by_name: dict[str, float] = {}
        for (metric, labels), value in scrape(url).items():
            if metric == "celery_task_sent_total":
                task = dict(labels)["name"]
                by_name[task] = by_name.get(task, 0) + value
        if by_name.get(name) == want or time.monotonic() > deadline:
            return by_name
        time.sleep(0.2)


def test_worker_metrics_count_exactly_per_task_and_state_under_prefork(redis_cluster, tmp_path):
    # Given a worker with 2 pool processes that are replaced every 3 tasks, serving /metrics
    port = free_port()
    folder = tmp_path / "metrics"
    worker = redis_cluster.start_worker(
        2,
        (f"--metrics-port={port}", "--max-tasks-per-child=3", *PROBE),
        METRICS_DIR=str(folder),
        METRICS_INTERVAL="0.5",
    )
    url = f"http://127.0.0.1:{port}/metrics"
    before = scrape(url)
    assert sample(before, "celery_worker_up", hostname=worker.hostname) == 1
    assert sample(before, "celery_task_received_total") is None  # nothing ran yet

    # When a producer runs 6 good and 1 invalid analysis, 2 comparisons and 1 task that
    # is retried once
    out = redis_cluster.producer("""
        import json
        from celery import group
        from redundancy.tasks import analyze_content, compare_texts
        from tests.integration.obs_probe import flaky
        texts = ["The cat sat. The cat sat. A dog barked.", "One. Two. Three.",
                 "Same here. Same here. Same here."] * 2
        scores = group(analyze_content.s(t) for t in texts).apply_async().get(timeout=60)
        try:
            analyze_content.delay("   ").get(timeout=60)
        except Exception as exc:
            failed = type(exc).__name__
        similar = [compare_texts.delay("hello world", t).get(timeout=60)["is_similar"]
                   for t in ("hello world!", "goodbye")]
        print(json.dumps({"scores": [s["redundancy_score"] for s in scores],
                          "pairs": sum(s["near_duplicate_pair_count"] for s in scores),
                          "failed": failed, "similar": similar,
                          "flaky": flaky.delay().get(timeout=60)}))
    """)
    assert out["failed"] == "EmptyTextError" and out["flaky"] == "ok"

    # Then the counters moved by exactly the number of tasks, per name and state
    samples = _wait_for_metric(url, "celery_task_succeeded_total", 1, name="tests.flaky")
    host = worker.hostname

    def count(metric: str, name: str, /, **labels: str) -> float | None:
        return sample(samples, metric, name=name, hostname=host, **labels)

    analyze = {"queue_name": "analysis"}
    assert count("celery_task_received_total", "redundancy.analyze_content", **analyze) == 7
    assert count("celery_task_started_total", "redundancy.analyze_content", **analyze) == 7
    assert count("celery_task_succeeded_total", "redundancy.analyze_content", **analyze) == 6
    assert (
        count(
            "celery_task_failed_total",
            "redundancy.analyze_content",
            exception="EmptyTextError",
            **analyze,
        )
        == 1
    )
    assert count("celery_task_retried_total", "redundancy.analyze_content", **analyze) == 0
    assert count("celery_task_rejected_total", "redundancy.analyze_content", **analyze) == 0
    assert count("celery_task_revoked_total", "redundancy.analyze_content", **analyze) == 0
    assert count("celery_task_runtime_count", "redundancy.analyze_content", **analyze) == 7
    assert count("celery_task_queue_wait_time_count", "redundancy.analyze_content", **analyze) == 7
    similarity = {"queue_name": "similarity"}
    assert count("celery_task_received_total", "redundancy.compare_texts", **similarity) == 2
    assert count("celery_task_succeeded_total", "redundancy.compare_texts", **similarity) == 2
    assert count("celery_task_failed_total", "redundancy.compare_texts") is None
    assert count("celery_task_received_total", "tests.flaky") == 2  # first try and the retry
    assert count("celery_task_started_total", "tests.flaky") == 2
    assert count("celery_task_retried_total", "tests.flaky") == 1
    assert count("celery_task_failed_total", "tests.flaky") is None
    assert count("celery_task_succeeded_total", "tests.flaky") == 1
    # sends are counted from task-sent events, the producer's and the worker's (the retry)
    sent = _wait_for_sent(url, "tests.flaky", 2)
    assert sent["tests.flaky"] == 2
    assert sent["redundancy.analyze_content"] == 7 and sent["redundancy.compare_texts"] == 2
    import socket

    senders = {dict(ls)["hostname"] for (n, ls) in scrape(url) if n == "celery_task_sent_total"}
    assert senders == {socket.gethostname()}  # the host, not a label per process
    # our own metrics
    assert sample(samples, "redundancy_documents_analysed_total") == 6
    assert sample(samples, "redundancy_documents_failed_total") == 1
    assert sample(samples, "redundancy_score_count") == 6
    assert sample(samples, "redundancy_score_sum") == pytest.approx(sum(out["scores"]))
    assert sample(samples, "redundancy_near_duplicate_pairs_total", kind="sentence") == out["pairs"]
    assert out["similar"] == [True, False]
    assert sample(samples, "redundancy_comparisons_total", algorithm="ratio", similar="true") == 1
    assert sample(samples, "redundancy_comparisons_total", algorithm="ratio", similar="false") == 1
    assert sample(samples, "redundancy_hook_errors_total") is None
    # worker and queue gauges
    assert sample(samples, "celery_worker_tasks_active", hostname=host) == 0
    assert sample(samples, "celery_active_process_count", queue_name="analysis") == 2
    for queue in ("analysis", "similarity", "batch", "corpus", "celery"):
        assert sample(samples, "celery_queue_length", queue_name=queue) == 0

    # and pool processes were really replaced (counts of exited ones are kept) ...
    processes = set(re.findall(r"ForkPoolWorker-(\d+)", worker.text()))
    assert len(processes) >= 4, processes
    # ... while the folder holds only files of live processes plus one archive per type
    # (a pool process at its task limit exits just after its last task: each scrape
    # compacts the files of exited ones, so scrape until none is left)
    for _ in range(150):
        after = scrape(url)  # compacts
        files = sorted(p.name for p in next(folder.iterdir()).glob("*.db"))
        pids = {int(m) for name in files if (m := name[:-3].rsplit("_", 1)[-1]).isdigit()}
        if all(pid_alive(pid) for pid in pids):
            break
        time.sleep(0.2)
    assert all(pid_alive(pid) for pid in pids), files
    # the exited processes' counts were kept (archived), not lost or counted twice
    assert (
        sample(
            after, "celery_task_received_total", name="redundancy.analyze_content", hostname=host
        )
        == 7
    )
    assert sample(after, "redundancy_documents_analysed_total") == 6
    # main + 2 pool processes (+ one that may be exiting right now), of the >= 5 that ran
    assert len(pids) <= 4 and {"counter_archive.db", "histogram_archive.db"} <= set(files)


def _events_written(redis_url):
    """Every event in the outbox and in the Redis Streams event stream."""
    import redis

    from redundancy import keys
    from redundancy.config import Settings
    from redundancy.events import parse_event
    from redundancy.events.wire import WireMessage

    client = redis.Redis.from_url(redis_url)
    streams = [keys.outbox(), keys.event_stream(Settings().events_topic)]
    return [
        parse_event(WireMessage.from_fields(fields).body)
        for stream in streams
        for _, fields in client.xrange(stream)
    ]


def test_traces_logs_and_correlation_id_follow_a_job_through_the_worker(
    redis_cluster, otlp_receiver, tmp_path
):
    # Given a worker with JSON logs and tracing to an OTLP endpoint (in-memory receiver)
    probe = tmp_path / "probe.jsonl"
    tracing = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "SERVICE_NAME": "crd-test",
    }
    worker = redis_cluster.start_worker(
        2, ("--log-format=json", *PROBE), PROBE_FILE=str(probe), **tracing
    )
    # When a traced producer sends an analysis and a batch, each in its correlation scope
    out = redis_cluster.producer(
        """
        import json
        from redundancy.observability import correlation_scope
        from redundancy.tasks import analyze_content, process_batch
        with correlation_scope("corr-analysis"):
            one = analyze_content.delay("The cat sat. The cat sat.")
        with correlation_scope("corr-batch"):
            batch = process_batch.delay(["A text. A text.", "Another one.", "A text. A text!"])
        one.get(timeout=60), batch.get(timeout=60)
        print(json.dumps({"analysis": one.id, "batch": batch.id}))
    """,
        **tracing,
    )

    # Then the producer's publish span and the worker's run span share one trace ...
    task_id = out["analysis"]
    publish = otlp_receiver.wait_for(
        lambda s: (
            s.name == "apply_async/redundancy.analyze_content"
            and s.attributes.get("messaging.message.id") == task_id
        )
    )[0]
    run = otlp_receiver.wait_for(
        lambda s: s.name == "run/redundancy.analyze_content" and s.trace_id == publish.trace_id
    )[0]
    assert run.parent_id == publish.span_id
    assert publish.kind == 4 and run.kind == 5  # PRODUCER, CONSUMER
    assert publish.service == run.service == "crd-test"
    # ... with the core's phases recorded on the run: each a child span when it took 1 ms
    # or more, else an attribute of the run (milliseconds)
    children = {s.name for s in otlp_receiver.spans if s.parent_id == run.span_id}
    for phase in ("normalise", "cdist"):
        assert f"redundancy.{phase}" in children or f"redundancy.{phase}_ms" in run.attributes
    trace_id = publish.trace_id

    # and the code that turns a result into an event sees that trace and correlation id
    worker.stop()
    seen = {r["task_id"]: r for r in map(json.loads, probe.read_text().splitlines())}
    assert seen[task_id]["trace_id"] == trace_id
    assert seen[task_id]["correlation_id"] == "corr-analysis"

    # and the events themselves carry both (outbox or, once relayed, the event stream)
    events = {e.task_id: e for e in _events_written(redis_cluster.backend_url)}
    assert events[task_id].event_type == "analysis.completed"
    assert (events[task_id].trace_id, events[task_id].correlation_id) == (trace_id, "corr-analysis")
    batch_event = next(e for e in events.values() if e.event_type == "batch.completed")
    assert batch_event.correlation_id == "corr-batch"

    # Every line the worker wrote is one JSON object
    records = [json.loads(line) for line in worker.text().splitlines()]
    assert records and all({"timestamp", "level", "logger", "message"} <= r.keys() for r in records)
    ran = [r for r in records if r["task_id"] == task_id]
    assert ran and all(
        r["correlation_id"] == "corr-analysis"
        and r["trace_id"] == trace_id
        and r["task_name"] == "redundancy.analyze_content"
        for r in ran
    )
    assert any(f"{task_id}] succeeded" in r["message"] for r in ran)
    # a batch's sub-tasks (sent by the worker) inherit the producer's correlation id
    batch_lines = [r for r in records if (r["task_name"] or "").startswith("redundancy.batch.")]
    assert {r["task_name"] for r in batch_lines} == {
        "redundancy.batch.analyze_chunk",
        "redundancy.batch.pair_shard",
        "redundancy.batch.merge",
    }
    assert {r["correlation_id"] for r in batch_lines} == {"corr-batch"}
    assert {seen[t]["correlation_id"] for t in seen if t != task_id} == {"corr-batch"}


def test_a_message_whose_correlation_header_is_not_an_id_runs_under_its_root_id(redis_cluster):
    # Given a worker with JSON logs
    worker = redis_cluster.start_worker(1, ("--log-format=json",))
    # When producers send analyses whose correlation header is a newline-laden string, an
    # object and a megabyte
    out = redis_cluster.producer("""
        import json
        from redundancy.tasks import analyze_content
        headers = ["two\\nlines", {"not": "an id"}, "x" * 1_000_000]
        sent = [analyze_content.apply_async(("A text. A text.",), headers={"crd_correlation_id": h})
                for h in headers]
        print(json.dumps([[r.id, r.get(timeout=60)["sentence_count"]] for r in sent]))
    """)
    # Then each ran, and its log lines and its event carry its own id (the root) instead
    assert [count for _, count in out] == [2, 2, 2]
    ids = {task_id for task_id, _ in out}
    events = {e.task_id: e for e in _events_written(redis_cluster.backend_url)}
    assert {events[i].correlation_id for i in ids} == ids and all(
        events[i].correlation_id == i for i in ids
    )
    worker.stop()
    records = [json.loads(line) for line in worker.text().splitlines()]
    assert all(len(line) < 10_000 for line in worker.text().splitlines())
    warned = [r for r in records if "is not a correlation id" in r["message"]]
    assert len(warned) == 3
    for task_id in ids:
        ran = [r for r in records if r.get("task_id") == task_id]
        assert ran and all(r["correlation_id"] == task_id for r in ran)


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_queue_lengths_are_measured_on_both_brokers(broker, request):
    # Given messages waiting in a queue nobody consumes
    cluster = request.getfixturevalue(f"{broker}_cluster")
    cluster.producer("""
        import json
        from redundancy.tasks import compare_texts
        for _ in range(3):
            compare_texts.delay("a", "b")
        print(json.dumps(True))
    """)
    # When the probe measures our queues on its own connection
    from kombu import Connection

    from redundancy.observability.queues import measure_queues

    with Connection(cluster.broker_url, connect_timeout=5) as conn:
        found = measure_queues(conn, ["similarity", "analysis", "no-such-queue"])
    # Then it sees the waiting messages; unknown or empty queues count 0
    consumers = 0 if broker == "rabbitmq" else None
    assert found == {
        "similarity": (3, consumers),
        "analysis": (0, consumers),
        "no-such-queue": (0, consumers),
    }


def test_one_worker_at_a_time_reports_queue_lengths(redis_server):
    from redundancy import keys
    from redundancy.observability.queues import reporter_lease
    from tests.services import REDIS_BACKEND_DB, flush_db, redis_url

    url = redis_url(REDIS_BACKEND_DB)
    flush_db(url)
    first, second = reporter_lease(url, "w1", 1), reporter_lease(url, "w2", 1)
    assert first.hold() and first.hold()  # taken, then renewed
    assert not second.hold()
    assert first.client.get(keys.metrics_queue_reporter()) == "w1"
    first.release()
    assert second.hold()
    second.release()


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_flower_requires_auth_and_lists_a_task_that_ran(redis_cluster, tmp_path):
    # Without credentials crd flower refuses to start
    refused = redis_cluster.crd("flower", "--port", str(free_port()), timeout=60)
    assert refused.returncode == 2 and "FLOWER_BASIC_AUTH is not set" in refused.stderr

    # Given a worker and Flower on loopback with basic auth from the environment
    worker = redis_cluster.start_worker(1)
    port = free_port()
    log = (tmp_path / "flower.log").open("w")
    flower = subprocess.Popen(
        [sys.executable, "-m", "redundancy", "flower", "--port", str(port)],
        env=redis_cluster.env(FLOWER_BASIC_AUTH="ops:s3cret", LOG_FORMAT="json"),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port, 0.2):
            assert flower.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        # Then it refuses requests without the login
        assert _get(f"{base}/api/tasks")[0] == 401
        assert _get(f"{base}/api/tasks", ("ops", "wrong"))[0] == 401
        # Flower's event receiver is attached once the worker's events reach it (its
        # heartbeats put it in Flower's event state): only then can it see a task run
        deadline = time.monotonic() + 60
        while True:
            status, body = _get(f"{base}/api/workers?status=true", ("ops", "s3cret"))
            online = json.loads(body) if status == 200 else {}
            if online.get(worker.hostname) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert online.get(worker.hostname) is True, (status, online)
        # and with it lists a task that ran
        out = redis_cluster.producer("""
            import json
            from redundancy.tasks import analyze_content
            r = analyze_content.delay("Flower sees this. Flower sees this.")
            r.get(timeout=60)
            print(json.dumps(r.id))
        """)
        deadline = time.monotonic() + 30
        while True:
            status, body = _get(f"{base}/api/tasks", ("ops", "s3cret"))
            tasks = json.loads(body) if status == 200 else {}
            if tasks.get(out, {}).get("state") == "SUCCESS" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert status == 200
        task = tasks[out]
        assert task["name"] == "redundancy.analyze_content" and task["state"] == "SUCCESS"
        # its arguments summarized (length and hash, never the text), its result
        assert task["args"].startswith("(<text: 35 chars, sha256:")
        assert "Flower sees this" not in task["args"] and "redundancy_score" in task["result"]
        # its Prometheus endpoint answers too (documented in the README)
        assert b"flower_events_total" in _get(f"{base}/metrics")[1]
    finally:
        import os
        import signal

        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(timeout=20)
        log.close()
    lines = Path(log.name).read_text().splitlines()
    assert lines and all(json.loads(line)["logger"] for line in lines)  # LOG_FORMAT=json
