"""The time budget on a real worker: a message whose input buys minutes of native CPU is
stopped at the hard limit its size allows, and the worker goes on serving."""

from __future__ import annotations

import time

import pytest
import redis
from celery import Celery

pytestmark = pytest.mark.integration

SUBMIT = """
    import json, random
    from redundancy.tasks import analyze_content, compare_texts
    rng = random.Random(3)
    vocab = [f"w{{i}}" for i in range(5000)]
    a = " ".join(rng.choices(vocab, k={words}))
    b = " ".join(rng.choices(vocab, k={words}))
    slow = compare_texts.delay(a, b, algorithm="partial_ratio")
    print(json.dumps({{"id": slow.id, "chars": len(a) + len(b)}}))
"""

GOOD = """
    import json
    from redundancy.tasks import analyze_content
    print(json.dumps(analyze_content.delay("One. One. Two.").get(timeout=60)))
"""


def test_partial_ratio_on_30_kb_is_stopped_at_its_budget_and_the_worker_serves_on(
    redis_cluster,
):
    # Given a worker whose budget is 3 s plus 60 s per million input characters
    worker = redis_cluster.start_worker(concurrency=1, TASK_TIME_BASE="3", TASK_TIME_PER_MCHAR="60")
    # When a producer asks for partial_ratio of two ~30 KB texts (minutes of native work
    # in rapidfuzz on this machine: more than 240 s measured; the soft limit cannot stop it)
    sent = redis_cluster.producer(SUBMIT.format(words=2_500))
    result = Celery(broker=redis_cluster.broker_url, backend=redis_cluster.backend_url)
    task = result.AsyncResult(sent["id"])
    # Then it fails with the hard time limit well before the task limit would (600 s)
    deadline = time.monotonic() + 120
    while task.state != "FAILURE" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert task.state == "FAILURE", f"still {task.state} after 120 s"
    assert type(task.result).__name__ == "TimeLimitExceeded"
    # at the budget of its size, not the global limit
    hard = round(3 + 60 * sent["chars"] / 1_000_000, 3)
    assert f"Hard time limit ({hard}s) exceeded for redundancy.compare_texts" in worker.text()
    # and the worker's replaced pool process serves the next task
    out = redis_cluster.producer(GOOD)
    assert out["sentence_count"] == 3
    assert worker.proc.poll() is None
    # and the stopped message was acknowledged, not put back to run again
    broker = redis.Redis.from_url(redis_cluster.broker_url)
    assert broker.llen("similarity") == 0 and not broker.hlen("unacked")
    assert worker.text().count("Hard time limit") == 1
