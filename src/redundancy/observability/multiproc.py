"""Prometheus multiprocess mode for prefork workers: the folder, set before the first import.

``prometheus_client`` decides once, when it is first imported, whether metric values
live in process memory or in per-process files under ``PROMETHEUS_MULTIPROC_DIR``. A
prefork worker needs the files (pool processes count tasks, the main process serves
``/metrics``), so the variable must be set before anything imports ``prometheus_client``
-- which is why this module imports only the standard library and runs first in
``create_app`` when a worker metrics port is configured.

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


def enable_multiprocess(base: str | Path | None = None) -> Path:
    """Point prometheus_client at a fresh folder of this process; idempotent per process.

    Raises RuntimeError when prometheus_client was already imported in memory mode:
    pool processes' metrics would silently be missing.
    """
    root = Path(base) if base else DEFAULT_BASE
    path = root / str(os.getpid())
    if os.environ.get(ENV) == str(path) and path.is_dir():
        return path
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before the metrics folder was set up, so metrics "
            "of pool processes would be lost; build the app (redundancy.workers.app) first"
        )
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(root)
    shutil.rmtree(path, ignore_errors=True)  # a previous process with our pid: stale
    path.mkdir()
    os.environ[ENV] = str(path)
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
