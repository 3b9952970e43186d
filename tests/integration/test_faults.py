"""Faults really injected: a worker SIGKILLed while a task runs loses nothing."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
from celery import Celery
from celery.result import AsyncResult

pytestmark = [pytest.mark.integration, pytest.mark.slow]


LONG = 10_000
"""Sentences of a text whose analysis takes ~7 s on one idle core (measured), so a kill
lands while the task runs."""
MEDIUM = 6_000
"""~2.6 s on one idle core: several times that on a loaded machine stays far below the
18 s soft time limit of the visibility-timeout test."""


def slow_text(sentences: int, seed: int = 5) -> str:
    """A text whose analysis takes seconds (many distinct sentences to compare)."""
    rng = random.Random(seed)
    vocab = [f"word{i}" for i in range(3000)]
    return " ".join(" ".join(rng.choices(vocab, k=9)).capitalize() + "." for _ in range(sentences))


SUBMIT = """
    import json, sys
    from redundancy.tasks import analyze_content
    text = open(sys.argv[0] if False else {path!r}).read()
    print(json.dumps({{"id": analyze_content.delay(text).id}}))
"""


def submit_slow(cluster, tmp_path, sentences):
    path = tmp_path / "slow.txt"
    path.write_text(slow_text(sentences))
    return cluster.producer(SUBMIT.format(path=str(path)))["id"], path.read_text()


def probe(cluster) -> Celery:
    return Celery(broker=cluster.broker_url, backend=cluster.backend_url)


def wait_started(result: AsyncResult, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result.state == "STARTED":
            return result.info
        time.sleep(0.05)
    raise TimeoutError(f"task never started (state {result.state})")


def wait_success(result: AsyncResult, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result.state == "SUCCESS":
            return result.result
        time.sleep(0.2)
    raise TimeoutError(f"task not done after {timeout} s (state {result.state})")


def wait_quiet(worker, *, settle: float = 2.0, timeout: float = 60) -> None:
    """Return once the worker's log has not grown for ``settle`` seconds (at most
    ``timeout``): whatever it was going to do with a message, it has logged."""
    deadline = time.monotonic() + timeout
    size, since = len(worker.text()), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = len(worker.text())
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            return
    raise TimeoutError(f"worker log still growing after {timeout} s")


def deliveries(cluster, task_id: str) -> int:
    import redis

    from redundancy import keys

    value = redis.Redis.from_url(cluster.backend_url).get(keys.delivery_counter(task_id, 0))
    return int(value or 0)


def test_killed_pool_process_task_is_redelivered_and_completes(redis_cluster, tmp_path):
    # Given a worker with one pool process running a multi-second analysis
    worker = redis_cluster.start_worker(concurrency=1)
    task_id, text = submit_slow(redis_cluster, tmp_path, LONG)
    result = AsyncResult(task_id, app=probe(redis_cluster))
    child_pid = wait_started(result)["pid"]
    # When that process is SIGKILLed mid-task
    os.kill(child_pid, signal.SIGKILL)
    assert result.state == "STARTED"  # the kill landed while the task ran
    # Then the message goes back on the queue, runs again in a new process and succeeds
    value = wait_success(result, timeout=120)
    from redundancy.core import analyze

    assert value["content_hash"] == analyze(text).content_hash
    assert value["sentence_count"] == LONG
    assert deliveries(redis_cluster, task_id) == 2
    assert "SIGKILL" in worker.text()


def test_killed_worker_on_rabbitmq_task_runs_on_the_next_worker(rabbitmq_cluster, tmp_path):
    # Given a whole worker (main process and pool) running a multi-second task
    first = rabbitmq_cluster.start_worker(concurrency=1)
    task_id, _ = submit_slow(rabbitmq_cluster, tmp_path, LONG)
    result = AsyncResult(task_id, app=probe(rabbitmq_cluster))
    wait_started(result)
    # When the worker is SIGKILLed (no chance to requeue anything itself)
    first.kill()
    assert result.state == "STARTED"  # the kill landed while the task ran
    # Then RabbitMQ returns the unacknowledged message and a new worker completes it
    second = rabbitmq_cluster.start_worker(concurrency=1)
    value = wait_success(result, timeout=120)
    assert value["sentence_count"] == LONG
    assert task_id in second.text()
    assert deliveries(rabbitmq_cluster, task_id) == 2


def test_killed_worker_on_redis_task_comes_back_after_visibility_timeout(redis_cluster, tmp_path):
    # Given a short visibility timeout (limits shrunk to match) and a worker mid-task
    limits = {
        "TASK_TIME_LIMIT": "20",
        "TASK_SOFT_TIME_LIMIT": "18",
        "CELERY_VISIBILITY_TIMEOUT": "24",
    }
    redis_cluster.extra_env.update(limits)
    first = redis_cluster.start_worker(concurrency=1)
    task_id, _ = submit_slow(redis_cluster, tmp_path, MEDIUM)
    result = AsyncResult(task_id, app=probe(redis_cluster))
    wait_started(result)
    started = time.monotonic()
    # When the whole worker is SIGKILLed
    first.kill()
    assert result.state == "STARTED"  # the kill landed while the task ran
    # Then, once the visibility timeout has passed, a new worker restores and runs it
    time.sleep(max(0.0, 25 - (time.monotonic() - started)))
    second = redis_cluster.start_worker(concurrency=1)
    value = wait_success(result, timeout=90)
    assert value["sentence_count"] == MEDIUM
    assert task_id in second.text()
    assert deliveries(redis_cluster, task_id) == 2


def test_poison_message_is_failed_after_max_deliveries(redis_cluster, tmp_path):
    # Given MAX_DELIVERIES=1: a message may be delivered once
    worker = redis_cluster.start_worker(concurrency=1, MAX_DELIVERIES="1")
    task_id, _ = submit_slow(redis_cluster, tmp_path, LONG)
    result = AsyncResult(task_id, app=probe(redis_cluster))
    child_pid = wait_started(result)["pid"]
    # When its process dies mid-task (as a message that crashes workers would make it)
    os.kill(child_pid, signal.SIGKILL)
    assert result.state == "STARTED"  # the kill landed while the task ran
    # Then the redelivered message is refused as poison instead of running again
    deadline = time.monotonic() + 120
    while result.state != "FAILURE" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert result.state == "FAILURE"
    assert type(result.result).__name__ == "PoisonMessageError"
    assert "delivered 2 times (MAX_DELIVERIES=1)" in str(result.result)
    assert deliveries(redis_cluster, task_id) == 2
    wait_quiet(worker)
    assert worker.text().count(f"[{task_id}] received") == 2  # and not a third time
