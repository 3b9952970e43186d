"""The correlation id and the current trace id: one owner, one obvious API.

A *correlation id* ties together everything one job causes: the producer's message, the
worker's task, its sub-tasks (a batch's chord), log lines, domain events and webhooks.

* Producers set it with ``correlation_scope("...")`` (or pass
  ``apply_async(headers={"crd_correlation_id": ...})``); otherwise every published
  message gets a new one. It travels in the message header ``crd_correlation_id``.
* In a worker the message's correlation id is bound for the task's run, so anything the
  task publishes (sub-tasks) inherits it, and ``current_correlation_id()`` returns it to
  log records and to the events code (which puts it in the event envelope).
* It goes into every log line, message header and event, so it has one shape
  (``CORRELATION_ID_SHAPE``: 1-128 of ``A-Z a-z 0-9 . _ : -``): ``correlation_scope``
  refuses another, the HTTP API replaces another with a new id, and a worker given
  another in a message header logs it and uses the job's root id instead.

``current_trace_id()`` is the OpenTelemetry trace id of the active span (32 hex digits),
or None when tracing is off.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Final

from opentelemetry import trace

CORRELATION_HEADER: Final = "crd_correlation_id"
"""Message header (and Celery request attribute) carrying the correlation id. Not
``correlation_id``: Celery uses that AMQP property for the task id."""
SENT_AT_HEADER: Final = "crd_sent_at"
"""Message header: UNIX time the producer published the message (queue wait time)."""

CORRELATION_ID_SHAPE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""What a correlation id may be: safe in a log line, a header, a key and a URL."""

_correlation_id: ContextVar[str | None] = ContextVar("redundancy_correlation_id", default=None)


def new_correlation_id() -> str:
    """A fresh random id (32 hex digits)."""
    return uuid.uuid4().hex


def usable_correlation_id(value: object) -> str | None:
    """``value`` if it has the shape of a correlation id, else None."""
    if isinstance(value, str) and CORRELATION_ID_SHAPE.fullmatch(value):
        return value
    return None


def current_correlation_id() -> str | None:
    """The correlation id of the job being produced or run here, None outside any job."""
    return _correlation_id.get()


def bind_correlation_id(correlation_id: str) -> Token[str | None]:
    """Make ``correlation_id`` current; give the token to ``unbind_correlation_id``."""
    return _correlation_id.set(correlation_id)


def unbind_correlation_id(token: Token[str | None]) -> None:
    _correlation_id.reset(token)


@contextmanager
def correlation_scope(correlation_id: str | None = None) -> Iterator[str]:
    """Tag every task published inside the block with one correlation id (new if None);
    an id of another shape than ``CORRELATION_ID_SHAPE`` is an InvalidInputError."""
    if correlation_id is not None and usable_correlation_id(correlation_id) is None:
        from redundancy.errors import InvalidInputError

        raise InvalidInputError(
            f"correlation id {correlation_id!r:.80} must be 1-128 characters of A-Z a-z 0-9 . _ : -"
        )
    cid = correlation_id or new_correlation_id()
    token = bind_correlation_id(cid)
    try:
        yield cid
    finally:
        unbind_correlation_id(token)


def current_trace_id() -> str | None:
    """Trace id of the active span as 32 hex digits, None when nothing is traced."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


__all__ = [
    "CORRELATION_HEADER",
    "CORRELATION_ID_SHAPE",
    "SENT_AT_HEADER",
    "bind_correlation_id",
    "correlation_scope",
    "current_correlation_id",
    "current_trace_id",
    "new_correlation_id",
    "unbind_correlation_id",
    "usable_correlation_id",
]
