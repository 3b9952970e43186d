"""Loaded into test workers with ``-I tests.integration.obs_probe``.

* ``tests.flaky``: fails with an infrastructure error on its first attempt, then succeeds
  (one retry, for the retried counter).
* A ``task_success`` receiver records what code running at that point -- the events'
  signal handlers (docs/architecture.md §3) -- sees as the correlation id and trace id,
  one JSON line per task in the file named by ``PROBE_FILE``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery.signals import task_success

from redundancy.errors import InfrastructureError
from redundancy.observability.context import current_correlation_id, current_trace_id
from redundancy.workers import app


@app.task(name="tests.flaky", bind=True, retry_backoff=False, default_retry_delay=0)
def flaky(self: Any) -> str:
    if self.request.retries == 0:
        raise InfrastructureError("first attempt fails")
    return "ok"


@task_success.connect(weak=False)
def _record(sender: Any = None, **_: Any) -> None:
    path = os.environ.get("PROBE_FILE")
    if not path or sender is None:
        return
    line = {
        "task_id": sender.request.id,
        "task_name": sender.name,
        "correlation_id": current_correlation_id(),
        "trace_id": current_trace_id(),
    }
    with open(path, "a") as out:
        out.write(json.dumps(line) + "\n")
