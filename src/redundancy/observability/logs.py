"""Logs: Celery's text format, or one JSON object per line (``LOG_FORMAT=json``).

A JSON line carries ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
``process`` and, when known, ``correlation_id``, ``task_id``, ``task_name``, ``trace_id``
and ``span_id`` (plus ``exc_info`` and any ``extra=`` fields). Formatting is
python-json-logger's.

In a worker Celery still owns the logging set-up (levels, ``--logfile``, redirected
stdout); in JSON mode the ``after_setup_logger`` hooks only swap the formatter of its
handlers, so pool processes inherit it. Other processes (the CLI) call
``configure_logging``.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from redundancy.config import LOG_FORMATS
from redundancy.observability.context import current_correlation_id

REPEATED_IN_MESSAGE: Final = frozenset({"args", "kwargs", "return_value"})
"""Keys of Celery's ``data`` extra that its message already quotes (often long)."""


class ContextFilter(logging.Filter):
    """Adds the job's context (correlation, task, trace) to every record, and keeps the
    structured part of Celery's ``data`` (id, name, runtime, eta) without repeating the
    arguments and result the message already shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if isinstance(data, dict) and not REPEATED_IN_MESSAGE.isdisjoint(data):
            record.data = {k: v for k, v in data.items() if k not in REPEATED_IN_MESSAGE}
        from celery._state import get_current_task

        task = get_current_task()
        request = getattr(task, "request", None) if task is not None else None
        record.correlation_id = current_correlation_id()
        record.task_id = getattr(request, "id", None)
        record.task_name = getattr(task, "name", None) if request is not None else None
        span = trace.get_current_span().get_span_context()
        record.trace_id = format(span.trace_id, "032x") if span.is_valid else None
        record.span_id = format(span.span_id, "016x") if span.is_valid else None
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s %(processName)s",
        rename_fields={"levelname": "level", "name": "logger", "processName": "process"},
        timestamp=True,
    )


def use_json(logger: logging.Logger) -> None:
    """Switch every handler of ``logger`` to JSON lines with the job's context."""
    for handler in logger.handlers:
        handler.setFormatter(json_formatter())
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())


def configure_logging(log_format: str, level: str | int = "WARNING") -> None:
    """Logging of a non-worker process (the CLI): stderr, text or JSON."""
    root = logging.getLogger()
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        root.handlers[:] = [handler]
        use_json(root)
    elif not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(level if isinstance(level, int) else level.upper())


__all__ = ["LOG_FORMATS", "ContextFilter", "configure_logging", "use_json"]
