"""crd doctor against real services: every line green, or one clear line for what is wrong."""

from __future__ import annotations

import pytest

from tests.services import free_port

pytestmark = pytest.mark.integration


def test_doctor_all_green_with_a_worker(redis_cluster):
    redis_cluster.start_worker(concurrency=1)
    out = redis_cluster.crd("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "✓ broker" in out.stdout and "✓ result backend" in out.stdout
    assert "1 answered" in out.stdout


def test_doctor_names_what_is_wrong(redis_cluster):
    # Given a broker URL where nothing listens and no worker
    dead = f"redis://127.0.0.1:{free_port()}/0"
    out = redis_cluster.crd(
        "doctor", CELERY_BROKER_URL=dead, CELERY_RESULT_BACKEND=dead, timeout=120
    )
    assert out.returncode == 1
    broker_line = next(line for line in out.stdout.splitlines() if line.split()[1:2] == ["broker"])
    assert broker_line.startswith("✗") and "CELERY_BROKER_URL" in broker_line
    assert any(
        line.startswith("✗ result backend") and "CELERY_RESULT_BACKEND" in line
        for line in out.stdout.splitlines()
    )
