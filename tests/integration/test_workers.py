"""Real workers on real brokers: .delay() round trips, batches, invalid input, crd batch."""

from __future__ import annotations

import json
import re

import pytest

from redundancy.core import near_duplicates
from tests.services import ROOT

pytestmark = pytest.mark.integration

ANALYZE = """
    import json
    from redundancy.tasks import analyze_content, compare_texts
    a = analyze_content.delay("The cat sat. The cat sat. A dog barked.").get(timeout=60)
    c = compare_texts.delay("hello world", "hello  World!", algorithm="token_sort_ratio")
    c = c.get(timeout=60)
    print(json.dumps({"analysis": a, "similarity": c}))
"""


def _check_round_trip(out):
    assert out["analysis"]["redundancy_score"] == pytest.approx(3 / 9)
    assert out["analysis"]["sentence_count"] == 3
    assert out["similarity"]["algorithm"] == "token_sort_ratio"
    assert out["similarity"]["is_similar"] is True


def test_delay_round_trip_on_redis(redis_cluster):
    # Given a worker on a Redis broker and backend
    worker = redis_cluster.start_worker(concurrency=1)
    # When a separate producer process calls .delay() and waits
    out = redis_cluster.producer(ANALYZE)
    # Then the results are the core's, computed by the worker
    _check_round_trip(out)
    assert "redundancy.analyze_content" in worker.text()


def test_delay_round_trip_on_rabbitmq(rabbitmq_cluster):
    worker = rabbitmq_cluster.start_worker(concurrency=1)
    out = rabbitmq_cluster.producer(ANALYZE)
    _check_round_trip(out)
    assert "amqp://" in worker.text()


def test_invalid_input_fails_at_once_without_retry(redis_cluster):
    worker = redis_cluster.start_worker(concurrency=1)
    out = redis_cluster.producer("""
        import json
        from redundancy.tasks import analyze_content
        r = analyze_content.delay("   ")
        try:
            r.get(timeout=60)
            outcome = "no error"
        except Exception as exc:
            outcome = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        print(json.dumps({"state": r.state, "error": outcome, "id": r.id}))
    """)
    assert out["state"] == "FAILURE"
    assert out["error"] == "redundancy.errors.EmptyTextError: text is empty or whitespace only"
    # the worker received it exactly once and never scheduled a retry
    log = worker.text()
    assert log.count(f"[{out['id']}] received") == 1
    assert "Retry in" not in log
    import redis

    from redundancy import keys

    backend = redis.Redis.from_url(redis_cluster.backend_url)
    assert backend.get(keys.delivery_counter(out["id"], 0)) == b"1"  # delivered once
    assert backend.get(keys.delivery_counter(out["id"], 1)) is None  # no retry attempt


def test_bad_threshold_is_reported_through_async_result(redis_cluster):
    redis_cluster.start_worker(concurrency=1)
    out = redis_cluster.producer("""
        import json
        from redundancy.tasks import compare_texts
        r = compare_texts.delay("a", "b", threshold=7)
        try:
            r.get(timeout=60)
        except Exception as exc:
            print(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
    """)
    assert out["type"] == "InvalidInputError"
    assert "threshold" in out["message"] and "less than or equal to 1" in out["message"]


def _corpus_items():
    files = sorted(p for p in (ROOT / "examples" / "corpus").rglob("*.txt"))
    return [{"id": str(p.relative_to(ROOT)), "text": p.read_text()} for p in files]


def test_process_batch_spreads_over_two_processes_and_matches_in_process(redis_cluster):
    # Given a worker with 2 pool processes and small chunks (so there are many sub-tasks)
    worker = redis_cluster.start_worker(concurrency=2, BATCH_CHUNK_SIZE="8")
    items = _corpus_items()
    # When a producer submits the corpus inline with .delay()
    result = redis_cluster.producer(
        f"""
        import json
        from redundancy.tasks import process_batch
        items = json.loads({json.dumps(json.dumps(items))})
        r = process_batch.delay(items, threshold=0.8)
        out = r.get(timeout=180)
        out["task_id"] = r.id
        print(json.dumps(out))
        """,
        BATCH_CHUNK_SIZE="8",
    )
    # Then the pairs equal the in-process core's, every item was analysed
    expected = near_duplicates([i["text"] for i in items], 0.8, ids=[i["id"] for i in items])
    assert [(p["a"], p["b"], p["score"]) for p in result["pairs"]] == [
        (p.a, p.b, p.score) for p in expected.pairs
    ]
    assert result["clusters"] == expected.clusters
    assert result["batch_id"] == result["task_id"]
    assert result["succeeded"] == len(items) and result["failed"] == 0
    # and the sub-tasks ran in both pool processes
    chunks = -(-len(items) // 8)
    sub = re.findall(
        r"ForkPoolWorker-(\d+)\] Task redundancy\.batch\.(?:analyze_chunk|pair_shard)",
        worker.text(),
    )
    assert len(sub) == chunks + chunks * (chunks + 1) // 2
    assert len(set(sub)) == 2


def test_process_batch_reports_partial_failure(redis_cluster):
    redis_cluster.start_worker(concurrency=1)
    result = redis_cluster.producer("""
        import json
        from redundancy.tasks import process_batch
        items = ["Fine text. Fine text.", {"id": "empty", "text": ""}, 42, {"id": "x"}]
        r = process_batch.delay(items)
        print(json.dumps(r.get(timeout=60)))
    """)
    assert (result["succeeded"], result["failed"]) == (1, 3)
    errors = {i["id"]: i["error"]["type"] for i in result["items"] if i["error"]}
    assert errors == {"empty": "EmptyTextError", "2": "NotTextError", "x": "NotTextError"}


def test_crd_batch_against_a_real_worker(redis_cluster, tmp_path):
    redis_cluster.start_worker(concurrency=2)
    out_file = tmp_path / "pairs.jsonl"
    proc = redis_cluster.crd(
        "batch", "examples/corpus", "--out", str(out_file), "--json", BATCH_CHUNK_SIZE="20"
    )
    assert proc.returncode == 0, proc.stderr
    cluster_result = json.loads(proc.stdout)
    # the same command on the embedded default gives the same pairs and clusters
    local = redis_cluster.crd(
        "batch", "examples/corpus", "--json", CELERY_BROKER_URL="", CELERY_RESULT_BACKEND=""
    )
    assert local.returncode == 0, local.stderr
    local_result = json.loads(local.stdout)
    assert cluster_result["pairs"] == local_result["pairs"]
    assert cluster_result["clusters"] == local_result["clusters"]
    assert len(cluster_result["pairs"]) >= 20
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert sum(r["record"] == "pair" for r in records) == len(cluster_result["pairs"])


def test_plain_celery_commands_find_the_app_in_redundancy_workers(redis_cluster):
    # Given a worker started by Celery's own command line (not `crd worker`): Celery's
    # find_app reads `redundancy.workers.app`, which is built on that first use
    import subprocess
    import sys

    worker = redis_cluster.start_plain_worker()
    hostname = worker.hostname
    # When `celery -A redundancy.workers inspect ping` asks it by name
    ping = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "redundancy.workers", "inspect", "ping",
         "-d", hostname, "-t", "10", "-j"],
        env=redis_cluster.env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=redis_cluster.tmp,
        check=False,
    )  # fmt: skip
    # Then it answers, and it runs our tasks on every queue of ours (routing from the app)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert json.loads(ping.stdout) == {hostname: {"ok": "pong"}}
    _check_round_trip(redis_cluster.producer(ANALYZE))
    assert "redundancy.compare_texts" in worker.text()
