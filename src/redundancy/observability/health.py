"""``python -m redundancy.observability.health [PORT]``: a worker's container health check.

Healthy means: the worker's ``/metrics`` (``WORKER_METRICS_PORT``, or PORT) answers and
reports ``celery_worker_up`` 1 -- the worker is ready and connected to its broker.
Standard library only, so a probe costs a bare interpreter (measured in the README)
instead of ``celery inspect ping``'s Celery import, app build and broker round trip.
Exit 0 healthy, 1 not (the reason on stderr).
"""

from __future__ import annotations

import os
import sys
import urllib.request

TIMEOUT = 5.0
UP_METRIC = "celery_worker_up{"


def worker_up(metrics_text: str) -> bool:
    """True if the exposition has a ``celery_worker_up`` sample of 1."""
    for line in metrics_text.splitlines():
        if line.startswith(UP_METRIC):
            try:
                return float(line.rsplit(" ", 1)[1]) == 1.0
            except (IndexError, ValueError):
                return False
    return False


def main(argv: list[str]) -> int:
    port = argv[1] if len(argv) > 1 else os.environ.get("WORKER_METRICS_PORT", "")
    if not port.isdigit():
        print("health: give the metrics port (or set WORKER_METRICS_PORT)", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError as exc:
        print(f"health: {url} does not answer: {exc}", file=sys.stderr)
        return 1
    if not worker_up(text):
        print("health: celery_worker_up is not 1 (not ready, or no broker)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
