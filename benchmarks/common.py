"""Shared helpers: timing, JSON output, short synthetic texts (corpora live in corpora.py)."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.corpora import synthetic_corpus

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_docs(n: int, chars: int, seed: int = 0) -> list[str]:
    """``n`` texts of about ``chars`` characters, 10% of them edited copies (see corpora)."""
    return synthetic_corpus(n, seed=seed, length=(0.8 * chars, 1.2 * chars)).texts


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its children (a
    worker's pool, its relay); SIGKILL them if they are not gone after ``timeout``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    return path
