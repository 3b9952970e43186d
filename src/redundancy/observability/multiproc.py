"""Prometheus multiprocess mode for prefork workers: the folder, chosen before our metrics.

``prometheus_client`` picks the storage of a metric's values when the value is created:
in process memory, or in per-process files under ``PROMETHEUS_MULTIPROC_DIR`` (its
``values.ValueClass``, chosen from that variable when the library is first imported). A
prefork worker needs the files (pool processes count tasks, the main process serves
``/metrics``), so ``enable_multiprocess`` sets the variable *and* switches
``values.ValueClass`` to files, then our metric modules are imported. Any entry point
works that way -- ``crd worker``, or ``celery -A redundancy.workers worker`` after
Celery's command plugins (Flower's among them) have imported ``prometheus_client``
already; only metrics created before the switch (none of ours) stay in memory.

Each worker main process gets its own fresh folder ``<base>/<pid>`` (so a worker never
reads another's files, and a folder left by a crashed run is never reused); folders of
processes that no longer run are removed at start, and a process removes its own at
exit. Pool processes inherit the variable and write into their parent's folder.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_BASE = Path(tempfile.gettempdir()) / "redundancy-metrics"


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (a zombie counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


METRIC_MODULES = (
    "redundancy.observability.metrics",
    "redundancy.events.metrics",
    "redundancy.cache.metrics",
)
"""Every module of ours that creates prometheus_client metrics (at import)."""


def enable_multiprocess(base: str | Path | None = None) -> Path:
    """Point prometheus_client at a fresh folder of this process; idempotent per process.

    Raises RuntimeError when one of our metric modules was imported before (its values
    live in memory: pool processes' counts would silently be missing).
    """
    root = Path(base) if base else DEFAULT_BASE
    path = root / str(os.getpid())
    if os.environ.get(ENV) == str(path) and path.is_dir():
        return path
    early = [name for name in METRIC_MODULES if name in sys.modules]
    if early:
        raise RuntimeError(
            f"{', '.join(early)} created metrics before the metrics folder was set up, so "
            "metrics of pool processes would be lost; build the app (redundancy.workers.app) "
            "before importing them"
        )
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(root)
    shutil.rmtree(path, ignore_errors=True)  # a previous process with our pid: stale
    path.mkdir()
    os.environ[ENV] = str(path)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:  # imported already (e.g. by Flower's celery command plugin)
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]
    atexit.register(_remove_own_folder, path, os.getpid())
    return path


def multiprocess_folder() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def remove_stale_folders(root: Path) -> list[Path]:
    """Remove ``<root>/<pid>`` folders whose process is gone (a crash left them)."""
    removed = []
    for child in root.iterdir():
        if child.is_dir() and child.name.isdigit() and not pid_alive(int(child.name)):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def _remove_own_folder(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # forked children inherit atexit handlers
        shutil.rmtree(path, ignore_errors=True)
