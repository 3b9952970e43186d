"""Operations: Prometheus metrics, OpenTelemetry tracing, JSON logs, the correlation id.

* ``context``   -- correlation id and trace id of the running job (events and webhooks
  call ``current_correlation_id()`` / ``current_trace_id()``).
* ``metrics``   -- celery-exporter's task metrics, ours, the worker's /metrics endpoint.
* ``multiproc`` -- prometheus multiprocess folder, set before prometheus_client loads.
* ``queues``    -- queue lengths measured by the worker main process, off the hot path.
* ``tracing``   -- OTel set-up per process (after fork), core phase spans.
* ``logs``      -- JSON log lines with the job's context.
* ``hooks``     -- the Celery signal handlers that tie these to tasks (in HOOK_MODULES).

Importing this package is cheap; ``prometheus_client`` is first imported by ``metrics``.
"""

from __future__ import annotations

from redundancy.observability.context import (
    correlation_scope,
    current_correlation_id,
    current_trace_id,
)

__all__ = ["correlation_scope", "current_correlation_id", "current_trace_id"]
