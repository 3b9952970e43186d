"""The Celery app, its routing and per-process set-up.

``celery -A redundancy.workers worker`` finds ``app`` here.
"""

from __future__ import annotations

from redundancy.workers.app import app, create_app

__all__ = ["app", "create_app"]
