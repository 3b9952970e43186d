"""The Celery app, its routing and per-process set-up.

``celery -A redundancy.workers worker`` finds ``app`` here (Celery's ``find_app`` reads
``module.app``). The app is built on first use of ``redundancy.workers.app`` (a PEP 562
module attribute), not when the package is imported: importing the routing names, the
task base class or the factory builds no app and connects no signal.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from redundancy.workers.factory import create_app

    app: Celery

_building = threading.RLock()


def __getattr__(name: str) -> Any:
    """``create_app`` on demand; ``app`` built once, on its first use in the process."""
    from redundancy.workers.factory import create_app

    if name == "create_app":
        return create_app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _building:
        built = globals().get("app")
        if built is None:
            built = globals()["app"] = create_app()
    return built


__all__ = ["app", "create_app"]
