"""A result's text form in Celery's "succeeded" log line and task-succeeded event.

Celery's tracer builds it for every task, log level aside, with ``saferepr``: a streaming
repr at about 1 µs a character, 340 µs for the first 360 characters of an analysis
(more than analysing a short text takes). A result here is a JSON dict (the result
serializer is JSON), so its JSON text cut at the same length says the same for ~10 µs
(orjson). ``install`` puts ``result_text`` where the tracer looks the function up
(``celery.app.trace.saferepr``); any other value keeps Celery's own form.
"""

from __future__ import annotations

from typing import Any

import orjson
from celery.app import trace
from celery.utils.saferepr import saferepr

CUT = "..."


def result_text(value: Any, maxlen: int | None = None, maxlevels: int = 3, seen: Any = None) -> str:
    """``value`` as JSON, cut at ``maxlen`` characters, for a dict; else Celery's saferepr."""
    if type(value) is dict:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            pass  # not JSON: Celery's form
        else:
            return text if maxlen is None or len(text) <= maxlen else text[:maxlen] + CUT
    return saferepr(value, maxlen, maxlevels, seen)  # type: ignore[no-any-return]


def install() -> None:
    """Make the tracer of this process use ``result_text`` (idempotent)."""
    trace.saferepr = result_text
