"""`crd` against real brokers and workers fails in one clear line and a bounded time, keeps
stderr clean when all is well, and handles Ctrl+C mid-batch as documented."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services import ROOT, Cluster, free_port

pytestmark = pytest.mark.integration

BOUND = 60
"""Seconds a failing command may take at most (the subprocess timeout: a hang fails)."""


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_crd_against_a_worker_leaves_stderr_empty(redis_cluster):
    # Given a worker
    redis_cluster.start_worker(concurrency=2)
    # When crd analyzes a file and runs a batch in both search modes on it
    runs = [
        redis_cluster.crd("analyze", "README.md"),
        redis_cluster.crd("batch", "examples/corpus", "--mode", "exact", BATCH_CHUNK_SIZE="20"),
        redis_cluster.crd("batch", "examples/corpus", "--mode", "indexed", BATCH_CHUNK_SIZE="20"),
    ]
    # Then each succeeds and writes nothing on stderr (no AsyncResult.__del__ noise)
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert run.stderr == ""


@pytest.mark.parametrize("command", [("analyze", "README.md"), ("batch", "examples/corpus")])
def test_no_worker_is_one_line_and_exit_1(redis_cluster, command):
    # Given a broker that answers but no worker
    # When crd sends work, Then it says so in one line instead of waiting forever
    run = redis_cluster.crd(*command, timeout=BOUND)
    assert run.returncode == 1
    assert "no worker answered" in _one_line(run.stderr)
    assert redis_cluster.broker_url in run.stderr


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_broker_that_is_down_is_one_line_and_exit_1(redis_cluster, scheme):
    # Given a broker URL where nothing listens (a refused connection)
    port = free_port()
    broker = (
        f"redis://127.0.0.1:{port}/0" if scheme == "redis" else f"amqp://u:pw@127.0.0.1:{port}//"
    )
    # When crd sends work
    run = redis_cluster.crd("analyze", "README.md", timeout=BOUND, CELERY_BROKER_URL=broker)
    # Then one line names the broker (without its password) and the cause
    line = _one_line(run.stderr)
    assert run.returncode == 1
    assert f"cannot reach the broker at {scheme}://" in line and f":{port}" in line
    assert "pw" not in line and "refused" in line.lower()


def _corpus(folder: Path, count: int) -> None:
    folder.mkdir()
    for n in range(count):
        words = " ".join(f"w{(n * 7 + k) % 97}" for k in range(120))
        (folder / f"doc-{n:03}.txt").write_text(f"{words}.")


def _interrupt_mid_batch(cluster: Cluster, corpus: Path, *args: str) -> tuple[int, str, str]:
    """Start crd batch, send SIGINT once a worker has received a sub-task; (code, stderr,
    batch id)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "redundancy", "batch", str(corpus), *args],
        env=cluster.env(BATCH_CHUNK_SIZE="4"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = cluster.workers[0]
    deadline = time.monotonic() + BOUND
    while "Task redundancy.batch." not in worker.text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=BOUND)
    found = re.search(r"batch ([0-9a-f]{32})", stderr)
    assert found, stderr
    return proc.returncode, stderr, found.group(1)


def test_ctrl_c_mid_batch_revokes_it_by_default(redis_cluster, tmp_path):
    # Given a worker with one process and a batch of many small sub-tasks
    worker = redis_cluster.start_worker(concurrency=1)
    _corpus(tmp_path / "docs", 48)

    # When Ctrl+C reaches crd batch while the worker runs the batch
    code, stderr, batch_id = _interrupt_mid_batch(redis_cluster, tmp_path / "docs")

    # Then it exits 130 naming the batch, whose queued tasks the worker drops
    assert code == 130
    assert f"interrupted: batch {batch_id} revoked" in _one_line(stderr)
    deadline = time.monotonic() + BOUND
    while "Discarding revoked task" not in worker.text():
        assert time.monotonic() < deadline, worker.text()[-2000:]
        time.sleep(0.2)
    # and the merge never runs: wait until the worker has no batch message left, then look
    import redis

    broker = redis.Redis.from_url(redis_cluster.broker_url)
    while broker.llen("batch") > 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    from celery import Celery

    app = Celery(broker=redis_cluster.broker_url, backend=redis_cluster.backend_url)
    result = app.AsyncResult(batch_id)
    # (the chord reports the revoked dependency as its failure, or was never reached)
    assert result.state == "PENDING" or (
        result.state == "FAILURE" and "revoked" in str(result.result).lower()
    ), (result.state, result.result)
    assert f"redundancy.batch.merge[{batch_id}]" not in worker.text()


def test_ctrl_c_mid_batch_can_leave_it_running(redis_cluster, tmp_path):
    # Given a worker and a batch of many small sub-tasks
    redis_cluster.start_worker(concurrency=2)
    _corpus(tmp_path / "docs", 32)

    # When Ctrl+C reaches crd batch --on-interrupt leave
    code, stderr, batch_id = _interrupt_mid_batch(
        redis_cluster, tmp_path / "docs", "--on-interrupt", "leave"
    )

    # Then it exits 130 naming the batch, which finishes on the workers
    assert code == 130
    assert f"interrupted: batch {batch_id} keeps running" in _one_line(stderr)
    from celery import Celery

    app = Celery(broker=redis_cluster.broker_url, backend=redis_cluster.backend_url)
    result = app.AsyncResult(batch_id)
    try:
        assert result.get(timeout=120)["document_count"] == 32
    finally:
        result.backend.remove_pending_result(result)
