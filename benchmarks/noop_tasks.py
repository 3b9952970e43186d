"""A no-op task on our app (same base class, queue and settings) for baselines.

Loaded only by benchmark workers (``celery worker -I benchmarks.noop_tasks``).
"""

from __future__ import annotations

from typing import Any

from redundancy.workers import app


@app.task(name="benchmarks.noop")
def noop(text: str, threshold: float = 0.8) -> dict[str, Any]:
    """Does nothing with its input: measures Celery's own cost per task."""
    return {"length": len(text)}
