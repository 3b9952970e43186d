"""content-redundancy-detector: find redundant and near-duplicate text at scale.

Importing this package is cheap and pulls in no Celery, Redis or Kafka code; the
subpackages (``redundancy.tasks``, ``redundancy.events`` ...) load what they need.
``redundancy.app`` is the Celery app (``redundancy.workers.app``, built on first use), so
Celery's usual ``celery -A redundancy worker`` finds it as ``-A redundancy.workers`` does.
"""

from __future__ import annotations

from typing import Any

from redundancy.errors import RedundancyError

__version__ = "0.1.0"
__all__ = ["RedundancyError", "__version__"]


def __getattr__(name: str) -> Any:
    """``app``: the process's Celery app, on demand (importing builds nothing)."""
    if name == "app":
        from redundancy.workers import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
