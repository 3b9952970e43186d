"""Importing a module of ours builds no Celery app and connects no signal handler.

Only the modules that declare tasks (``@app.task``) need the app, and they ask for it by
name (``redundancy.workers.app``); everything else -- task names, core, CLI, events,
observability -- must stay importable without running the app's set-up. Each check runs
in a fresh interpreter, since this test process has long built its app.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "redundancy"


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_names_core_and_cli_load_no_celery_code_at_all():
    # Given a fresh interpreter that reports every import (python -X importtime)
    # When it imports the task names, the pure core and the command line
    out = run_python(
        "-X",
        "importtime",
        "-c",
        "import redundancy.workers.routing, redundancy.core, redundancy.cli",
    )
    # Then no module of Celery or kombu was even loaded, so no app can have been built
    # (a stronger check than counting apps: no Celery code ran at all)
    assert out.returncode == 0, out.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line]
    assert "redundancy.workers.routing" in imported  # the report is the one we think
    assert "redundancy.cli" in imported
    loaded = [m for m in imported if m.split(".")[0] in {"celery", "kombu"}]
    assert loaded == []


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _task_modules() -> set[str]:
    """Modules that declare tasks on the app (they build it, by design), and the packages
    whose ``__init__`` imports them."""
    declaring = {
        _module(p) for p in SRC.rglob("*.py") if re.search(r"^@app\.task\b", p.read_text(), re.M)
    }
    packages = set()
    for module in declaring:
        package = module.rsplit(".", 1)[0]
        init = SRC.parent.joinpath(*package.split("."), "__init__.py")
        if re.search(rf"^from {re.escape(module)} import", init.read_text(), re.M):
            packages.add(package)
    return declaring | packages


def _other_modules(skip: set[str]) -> list[str]:
    """Every module of the package but ``skip`` and what lives in a skipped package (read
    from the files: walking with pkgutil would import the packages)."""
    modules = {_module(p) for p in SRC.rglob("*.py") if p.name != "__main__.py"}
    return sorted(m for m in modules if not any(m == s or m.startswith(s + ".") for s in skip))


PROBE = """
    import importlib, json, sys
    from celery.app import base
    from celery import signals
    from celery.utils.dispatch import Signal

    built = []
    init = base.Celery.__init__

    def recording_init(self, *args, **kwargs):  # counts every app, even a dropped one
        built.append(args[:1])
        init(self, *args, **kwargs)

    base.Celery.__init__ = recording_init

    def connected():
        return {n: len(s.receivers) for n, s in vars(signals).items()
                if isinstance(s, Signal) and s.receivers}

    modules = json.loads(sys.argv[1])
    for name in modules:
        importlib.import_module(name)
    after_imports = {"modules": len(modules), "apps": len(built), "signals": connected()}

    from redundancy.workers import app  # the one place that builds the app
    first = connected()
    from redundancy.workers import app as again, create_app
    create_app()  # a second app registers the same hooks: no second handler
    print(json.dumps({
        "after_imports": after_imports,
        "same_app": app is again,
        "apps": len(built),
        "on_first_app": first,
        "on_second_app": connected(),
    }))
"""


def test_no_module_builds_the_app_or_connects_a_signal_on_import():
    # Given every module of the package except those that declare tasks, in an
    # interpreter that records each Celery app built and reads every signal's receivers
    skip = _task_modules()
    assert "redundancy.tasks.analysis" in skip  # the tasks are found, so the rest is the rest
    # When they are all imported, then the app is asked for, then a second app is created
    modules = _other_modules(skip)
    out = run_python("-c", textwrap.dedent(PROBE), json.dumps(modules))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # Then the imports built no app and connected nothing
    assert report["after_imports"]["modules"] == len(modules) > 40
    assert report["after_imports"]["apps"] == 0
    assert report["after_imports"]["signals"] == {}
    # and asking for the app builds it once and registers every hook module's handlers
    assert report["same_app"] is True
    first = report["on_first_app"]
    assert first["task_success"] == 2  # the events' outbox write, and the metrics
    assert first["worker_ready"] == 2  # the relay beside the worker, and the queue monitor
    assert first["worker_process_shutdown"] == 2  # the cache's statistics, and tracing
    assert first["before_task_publish"] == 1  # the correlation id header
    # and registering again (a second app) adds no second handler anywhere
    assert report["apps"] == 2
    assert report["on_second_app"] == first
