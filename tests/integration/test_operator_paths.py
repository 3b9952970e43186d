"""What a plain Celery operator types works as documented: `celery -A redundancy.workers
worker` with metrics on, a `celeryconfig.py`-only broker, `send_task` by name from a code
base with an app of its own."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from tests.services import free_port, sample, scrape

pytestmark = pytest.mark.integration


def test_plain_celery_worker_with_worker_metrics_port_serves_pool_metrics(redis_cluster):
    # Given Flower installed (its celery command plugin imports prometheus_client before
    # Celery imports our app) and WORKER_METRICS_PORT set, as the README's alternative to
    # `crd worker --metrics-port`
    assert "flower" in {e.name for e in entry_points(group="celery.commands")}
    port = free_port()
    worker = redis_cluster.start_plain_worker(WORKER_METRICS_PORT=str(port))

    # When a producer runs one analysis on it
    redis_cluster.producer("""
        import json
        from redundancy.tasks import analyze_content
        print(json.dumps(analyze_content.delay("One. One. Two.").get(timeout=60)["word_count"]))
    """)

    # Then /metrics shows what the pool process counted
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    succeeded = sample(
        samples,
        "celery_task_succeeded_total",
        name="redundancy.analyze_content",
        hostname=worker.hostname,
    )
    assert succeeded == 1
    assert sample(samples, "redundancy_documents_analysed_total") == 1
    assert "RuntimeError" not in worker.text()

    # and `celery status` with the variable set answers too
    status = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "redundancy.workers", "status", "-t", "10"],
        env=redis_cluster.env(WORKER_METRICS_PORT=str(free_port())),
        capture_output=True, text=True, timeout=120, cwd=redis_cluster.tmp, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    assert worker.hostname in status.stdout and "Traceback" not in status.stderr

    # and Celery's shortest form, `-A <package>`, finds the same app
    ping = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "redundancy", "inspect", "ping", "-t", "10"],
        env=redis_cluster.env(), capture_output=True, text=True, timeout=120,
        cwd=redis_cluster.tmp, check=False,
    )  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert worker.hostname in ping.stdout and "pong" in ping.stdout


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_send_task_by_name_without_a_queue_reaches_a_standard_worker(broker, request):
    # Given a standard worker (every queue by default)
    cluster = request.getfixturevalue(f"{broker}_cluster")
    cluster.start_worker(concurrency=1)

    # When a producer with a Celery app of its own (no routes, no queues) sends our task by
    # name, so Celery puts it on its default queue
    out = cluster.producer(f"""
        import json
        from celery import Celery
        app = Celery("elsewhere", broker={cluster.broker_url!r}, backend={cluster.backend_url!r})
        result = app.send_task("redundancy.analyze_content", args=["The cat sat. The cat sat."])
        print(json.dumps(result.get(timeout=60)))
    """)

    # Then the worker ran it
    assert out["redundancy_score"] == pytest.approx(0.5)


def test_a_broker_set_only_in_the_named_celeryconfig_is_used_by_workers_and_producers(
    redis_cluster, tmp_path
):
    # Given the broker and result backend only in a celeryconfig.py named by
    # CELERY_CONFIG_MODULE (the usual Celery set-up), no CELERY_BROKER_URL
    config = tmp_path / "celeryconfig.py"
    config.write_text(
        f"broker_url = {redis_cluster.broker_url!r}\n"
        f"result_backend = {redis_cluster.backend_url!r}\n"
    )
    env = {
        "CELERY_BROKER_URL": "",
        "CELERY_RESULT_BACKEND": "",
        "CELERY_CONFIG_MODULE": str(config),
    }

    # When `crd worker` starts and a producer calls .delay()
    worker = redis_cluster.start_worker(concurrency=1, **env)
    out = redis_cluster.producer(
        """
        import json, os
        from redundancy.tasks import analyze_content
        r = analyze_content.delay("Configured in a module. Configured in a module.")
        print(json.dumps({"id": r.id, "score": r.get(timeout=60)["redundancy_score"],
                          "pid": os.getpid()}))
        """,
        **env,
    )

    # Then the task went through that broker to the worker (not run in the producer)
    assert out["score"] == pytest.approx(0.5)
    assert f"[{out['id']}] received" in worker.text()
    assert redis_cluster.broker_url.split("//")[1] in worker.text()  # its banner's transport


def test_a_worker_keeps_messages_in_hand_by_the_queues_it_consumes(redis_cluster):
    # Given workers started as operators start them: of short jobs only (crd and plain
    # celery), of every queue, with the setting, with Celery's own option
    short = redis_cluster.start_worker(concurrency=2, cli_args=("-Q", "analysis"))
    every = redis_cluster.start_worker(concurrency=2)
    setting = redis_cluster.start_worker(
        concurrency=2, cli_args=("-Q", "analysis"), WORKER_PREFETCH_MULTIPLIER="2"
    )
    option = redis_cluster.start_worker(
        concurrency=2, cli_args=("-Q", "analysis", "--prefetch-multiplier", "3")
    )
    plain = redis_cluster.start_plain_worker("-Q", "analysis,similarity")
    workers = {"short": short, "every": every, "setting": setting, "option": option}

    # When Celery's own inspection asks each how many messages it takes at most
    out = redis_cluster.producer(f"""
        import json
        from redundancy.workers import app
        names = { ({k: w.hostname for k, w in workers.items()} | {"plain": plain.hostname})!r}
        stats = app.control.inspect(destination=list(names.values()), timeout=10).stats() or {{}}
        print(json.dumps({{k: stats.get(h, {{}}).get("prefetch_count") for k, h in names.items()}}))
    """)

    # Then a worker of short jobs keeps four per process in hand (Celery's default), one
    # that also takes batch and corpus jobs one, and an explicit choice stands
    assert out == {"short": 8, "every": 2, "setting": 4, "option": 6, "plain": 4}
