"""The time budget on a real worker: a message whose input buys more native CPU than its
size allows is stopped at the hard limit of that size, and the worker goes on serving."""

from __future__ import annotations

import time

import pytest
import redis
from celery import Celery

pytestmark = pytest.mark.integration

SUBMIT = """
    import json, random
    from redundancy.core.cost import estimate_analysis
    from redundancy.tasks import analyze_content
    rng = random.Random(3)
    vocab = [f"w{{i}}" for i in range(5000)]
    sentences = []
    while True:  # distinct sentences until the work is {factor}x the budget of the text
        sentences += [" ".join(rng.choices(vocab, k=8)) + "." for _ in range(500)]
        text = " ".join(sentences)
        budget = {base} + {per_mchar} * len(text) / 1_000_000
        if estimate_analysis(text, "token_set_ratio") > {factor} * budget:
            break
    slow = analyze_content.delay(text, algorithm="token_set_ratio")
    print(json.dumps({{"id": slow.id, "chars": len(text)}}))
"""

GOOD = """
    import json
    from redundancy.tasks import analyze_content
    print(json.dumps(analyze_content.delay("One. One. Two.").get(timeout=60)))
"""


def test_work_the_core_admits_is_stopped_at_the_budget_of_its_size_and_the_worker_serves_on(
    redis_cluster,
):
    # Given a worker whose budget is 2 s plus 10 s per million input characters, and whose
    # core admits any estimated work (MAX_WORK_SECONDS: the core's own limit is not what
    # is tested here)
    worker = redis_cluster.start_worker(
        concurrency=1, TASK_TIME_BASE="2", TASK_TIME_PER_MCHAR="10", MAX_WORK_SECONDS="100000"
    )
    # When a producer asks for an analysis (token_set_ratio over thousands of distinct
    # sentences) estimated at five times its budget: native work in rapidfuzz's cdist
    sent = redis_cluster.producer(SUBMIT.format(base=2, per_mchar=10, factor=5))
    result = Celery(broker=redis_cluster.broker_url, backend=redis_cluster.backend_url)
    task = result.AsyncResult(sent["id"])
    # Then it fails with the hard time limit well before the task limit would (600 s)
    deadline = time.monotonic() + 120
    while task.state != "FAILURE" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert task.state == "FAILURE", f"still {task.state} after 120 s"
    # by the soft limit (rapidfuzz's cdist checks for signals while it scores, and the
    # search returns to Python between blocks) or, failing that, by the hard limit
    stopped = type(task.result).__name__
    assert stopped in ("SoftTimeLimitExceeded", "TimeLimitExceeded")
    # at the budget of its size, not the global limit
    hard = round(2 + 10 * sent["chars"] / 1_000_000, 3)
    kind, limit = ("Soft", round(hard * 0.9, 3)) if stopped.startswith("Soft") else ("Hard", hard)
    assert f"{kind} time limit ({limit}s) exceeded for redundancy.analyze_content" in worker.text()
    # and the worker's pool process (replaced after a hard limit) serves the next task
    out = redis_cluster.producer(GOOD)
    assert out["sentence_count"] == 3
    assert worker.proc.poll() is None
    # and the stopped message was acknowledged, not put back to run again
    broker = redis.Redis.from_url(redis_cluster.broker_url)
    assert broker.llen("analysis") == 0 and not broker.hlen("unacked")
    assert worker.text().count(f"{kind} time limit") == 1
