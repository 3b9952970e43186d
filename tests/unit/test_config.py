"""Settings: defaults, derived URLs, and bad values failing with the variable's name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from redundancy.config import load_settings
from redundancy.errors import ConfigurationError
from redundancy.workers.celeryconfig import celery_settings


def test_unset_broker_is_the_embedded_default():
    s = load_settings()
    assert s.embedded
    conf = celery_settings(s)
    assert conf["task_always_eager"] is True
    assert conf["broker_url"] == "memory://"
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
    assert {q.name for q in conf["task_queues"]} == {"analysis", "similarity", "batch", "corpus"}


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


def test_ops_override_module_wins(monkeypatch, tmp_path):
    # Given a celeryconfig.py in the working directory that changes one setting
    (tmp_path / "celeryconfig.py").write_text(
        "worker_max_tasks_per_child = 7\ntask_time_limit = 99\n"
    )
    monkeypatch.chdir(tmp_path)
    from redundancy.workers.app import create_app

    app = create_app()
    assert app.conf.worker_max_tasks_per_child == 7
    assert app.conf.task_time_limit == 99
    assert app.conf.task_acks_late is True  # the rest still comes from the package


def test_ops_override_module_named_by_celery_config_module_wins(monkeypatch, tmp_path):
    # Given a module on the import path named by CELERY_CONFIG_MODULE, and a different
    # celeryconfig.py in the working directory
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "crd_ops_settings_test.py").write_text(
        "worker_max_tasks_per_child = 11\ntask_time_limit = 123\n"
    )
    (tmp_path / "celeryconfig.py").write_text("worker_max_tasks_per_child = 7\n")
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.setenv("CELERY_CONFIG_MODULE", "crd_ops_settings_test")
    monkeypatch.chdir(tmp_path)
    from redundancy.workers.app import create_app

    # When the app is built, the named module wins (over the working directory's too)
    try:
        app = create_app()
    finally:
        sys.modules.pop("crd_ops_settings_test", None)
    assert app.conf.worker_max_tasks_per_child == 11
    assert app.conf.task_time_limit == 123
    assert app.conf.task_acks_late is True  # the rest still comes from the package


def test_root_celeryconfig_exports_the_package_settings():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "celeryconfig.py"
    spec = importlib.util.spec_from_file_location("root_celeryconfig", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.accept_content == ["json"]
    assert module.task_acks_late is True


def test_errors_never_print_a_password(monkeypatch):
    monkeypatch.setenv("RABBITMQ_URL", "rabbitmq://user:topsecret@host//")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "topsecret" not in str(caught.value)
    assert "user:***@host" in str(caught.value)
