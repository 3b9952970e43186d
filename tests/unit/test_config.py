"""Settings: defaults, derived URLs, and bad values failing with the variable's name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from redundancy.config import load_settings
from redundancy.errors import ConfigurationError
from redundancy.workers.celeryconfig import (
    LONG_JOB_PREFETCH,
    SHORT_JOB_PREFETCH,
    celery_settings,
    prefetch_multiplier,
)


def test_unset_broker_is_the_embedded_default():
    s = load_settings()
    assert s.embedded
    conf = celery_settings(s)
    assert conf["task_always_eager"] is True
    assert conf["broker_url"] == "memory://localhost/"
    assert s.cdist_workers == -1


def test_redis_broker_defaults_backend_and_job_store_to_itself():
    s = load_settings(celery_broker_url="redis://h:6379/3")
    assert (s.result_backend_url, s.job_store_url) == ("redis://h:6379/3", "redis://h:6379/3")
    assert s.cdist_workers == 1
    conf = celery_settings(s)
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"]


def test_rabbitmq_broker_requires_a_redis_backend():
    with pytest.raises(ConfigurationError, match="CELERY_RESULT_BACKEND is required"):
        load_settings(celery_broker_url="amqp://guest@h//")
    s = load_settings(celery_broker_url="amqp://guest@h//", redis_url="redis://h/1")
    assert s.result_backend_url == "redis://h/1"
    assert celery_settings(s)["broker_transport_options"] == {"confirm_publish": True}


def test_reliability_settings_are_on():
    conf = celery_settings(load_settings(celery_broker_url="redis://h/0"))
    assert conf["accept_content"] == ["json"] and conf["result_accept_content"] == ["json"]
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_publish_retry"]
    queues = {q.name for q in conf["task_queues"]}
    assert queues == {"analysis", "similarity", "batch", "corpus", "celery"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CACHE_DEFAULT_TTL": "abc"}, "CACHE_DEFAULT_TTL: Input should be a valid integer"),
        ({"CACHE_DEFAULT_TTL": "0"}, "CACHE_DEFAULT_TTL: Input should be greater than 0"),
        ({"CELERY_BROKER_URL": "reddis://x"}, "CELERY_BROKER_URL: .*did you mean redis://"),
        ({"MESSAGE_BROKER_TYPE": "kafak"}, "MESSAGE_BROKER_TYPE: Input should be"),
        (
            {
                "CELERY_BROKER_URL": "redis://h/0",
                "CELERY_VISIBILITY_TIMEOUT": "60",
                "TASK_TIME_LIMIT": "120",
                "TASK_SOFT_TIME_LIMIT": "100",
            },
            "CELERY_VISIBILITY_TIMEOUT must exceed TASK_TIME_LIMIT",
        ),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match=message):
        load_settings()


def test_a_bad_setting_stops_the_cli_at_start_with_its_name():
    out = subprocess.run(
        [sys.executable, "-m", "redundancy", "analyze", "-"],
        input="text",
        capture_output=True,
        text=True,
        check=False,
        env={"CACHE_DEFAULT_TTL": "soon", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 2
    assert "CACHE_DEFAULT_TTL" in out.stderr and "Traceback" not in out.stderr


def test_override_module_named_by_path_wins(monkeypatch, tmp_path):
    # Given an ops module named by its path in CELERY_CONFIG_MODULE
    path = tmp_path / "ops.py"
    path.write_text("worker_max_tasks_per_child = 7\ntask_time_limit = 99\n")
    monkeypatch.setenv("CELERY_CONFIG_MODULE", str(path))
    from redundancy.workers import create_app

    # When the app is built
    app = create_app()

    # Then its settings win and the rest still comes from the package
    assert app.conf.worker_max_tasks_per_child == 7
    assert app.conf.task_time_limit == 99
    assert app.conf.task_acks_late is True


def test_override_module_named_on_the_import_path_wins(monkeypatch, tmp_path):
    # Given a module on the import path named by CELERY_CONFIG_MODULE
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "crd_ops_settings_test.py").write_text(
        "worker_max_tasks_per_child = 11\ntask_time_limit = 123\n"
    )
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.setenv("CELERY_CONFIG_MODULE", "crd_ops_settings_test")
    from redundancy.workers import create_app

    # When the app is built, the named module wins
    try:
        app = create_app()
    finally:
        sys.modules.pop("crd_ops_settings_test", None)
    assert app.conf.worker_max_tasks_per_child == 11
    assert app.conf.task_time_limit == 123


def test_a_celeryconfig_in_the_working_directory_is_never_imported(tmp_path):
    # Given an untrusted folder whose celeryconfig.py would leave a mark if it ran
    mark = tmp_path / "ran"
    (tmp_path / "celeryconfig.py").write_text(
        f"open({str(mark)!r}, 'w').close()\nbroker_url = 'redis://attacker:1/0'\n"
    )
    (tmp_path / "doc.txt").write_text("Some text. Some text.")
    env = {"PATH": os.environ["PATH"]}

    # When crd batch runs inside it, and a producer builds the app there too
    batch = subprocess.run(
        [sys.executable, "-m", "redundancy", "batch", "--json", "."],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    app = subprocess.run(
        [sys.executable, "-c", "from redundancy.workers import app; print(app.conf.broker_url)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip

    # Then nothing from the folder ran: the batch ran on the embedded default
    assert batch.returncode == 0, batch.stderr
    assert json.loads(batch.stdout)["document_count"] == 2  # doc.txt and celeryconfig.py
    assert app.stdout.strip() == "memory://localhost/"
    assert not mark.exists()


def test_a_module_name_is_not_looked_up_in_the_working_directory(monkeypatch, tmp_path):
    # Given CELERY_CONFIG_MODULE naming a module that exists only in the working
    # directory, which python -c / -m / celery -A put on sys.path
    (tmp_path / "crd_untrusted_conf.py").write_text("raise SystemExit('ran')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CELERY_CONFIG_MODULE", "crd_untrusted_conf")
    from redundancy.config import get_settings

    # When settings are read, Then the name is not found there: a clear error says why
    with pytest.raises(ConfigurationError, match="working directory is not searched"):
        get_settings()
    assert "crd_untrusted_conf" not in sys.modules


def test_the_broker_of_the_override_module_is_the_broker(monkeypatch, tmp_path):
    # Given a broker set only in the ops module (no CELERY_BROKER_URL)
    path = tmp_path / "celeryconfig.py"
    path.write_text("broker_url = 'redis://h:6379/3'\n")
    monkeypatch.setenv("CELERY_CONFIG_MODULE", str(path))
    from redundancy.config import get_settings
    from redundancy.workers import create_app

    # When settings and the app are built
    settings, app = get_settings(), create_app()

    # Then jobs go to that broker: not the embedded default, not eager, results in its Redis
    assert not settings.embedded and settings.job_store_url == "redis://h:6379/3"
    assert app.conf.task_always_eager is False
    assert app.conf.broker_url == app.conf.result_backend == "redis://h:6379/3"


def test_a_bad_broker_in_the_override_module_names_the_module(monkeypatch, tmp_path):
    path = tmp_path / "celeryconfig.py"
    path.write_text("broker_url = 'amqp://guest@h//'\n")  # RabbitMQ needs a Redis backend
    monkeypatch.setenv("CELERY_CONFIG_MODULE", str(path))
    from redundancy.config import get_settings

    with pytest.raises(
        ConfigurationError, match=r"CELERY_RESULT_BACKEND is required.*celeryconfig"
    ):
        get_settings()


def test_the_root_celeryconfig_is_a_template_that_changes_nothing(monkeypatch):
    # Given the repository's celeryconfig.py named explicitly
    from pathlib import Path

    from redundancy.config.overrides import celery_overrides

    path = Path(__file__).resolve().parents[2] / "celeryconfig.py"
    monkeypatch.setenv("CELERY_CONFIG_MODULE", str(path))
    # Then it assigns no setting until ops uncomment one
    assert celery_overrides() == {}


def test_errors_never_print_a_password(monkeypatch):
    monkeypatch.setenv("RABBITMQ_URL", "rabbitmq://user:topsecret@host//")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "topsecret" not in str(caught.value)
    assert "user:***@host" in str(caught.value)


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        (["analysis"], SHORT_JOB_PREFETCH),
        ("analysis, similarity", SHORT_JOB_PREFETCH),
        (["analysis", "batch"], LONG_JOB_PREFETCH),
        (["corpus"], LONG_JOB_PREFETCH),
        (["celery"], LONG_JOB_PREFETCH),  # send_task by name: any task, long ones too
        (None, LONG_JOB_PREFETCH),  # every queue
        ("", LONG_JOB_PREFETCH),
    ],
)
def test_messages_in_hand_follow_the_queues_a_worker_consumes(queues, expected):
    assert SHORT_JOB_PREFETCH > LONG_JOB_PREFETCH == 1
    assert prefetch_multiplier(queues, load_settings()) == expected


def test_the_prefetch_setting_wins_over_the_queues():
    s = load_settings(worker_prefetch_multiplier=2, celery_broker_url="redis://h/0")
    assert prefetch_multiplier(["analysis"], s) == prefetch_multiplier(None, s) == 2
    assert celery_settings(s)["worker_prefetch_multiplier"] == 2
    with pytest.raises(ConfigurationError, match="WORKER_PREFETCH_MULTIPLIER"):
        load_settings(worker_prefetch_multiplier=0)
