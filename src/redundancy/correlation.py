"""The correlation id of a job as the events code sees it: one function.

The id itself is owned by ``redundancy.observability.context`` (producers put it in the
``crd_correlation_id`` header, workers bind it for the task's run). This function adds
the fallbacks events need: a message sent without one (an old producer, a plain
``send_task`` from another code base) uses the workflow's root task id, so every event of
a batch still shares one id.
"""

from __future__ import annotations

from typing import Any

from redundancy.observability.context import (
    CORRELATION_HEADER,
    current_correlation_id,
    usable_correlation_id,
)


def correlation_id_of(request: Any) -> str | None:
    """The bound correlation id, else the message's header, else the root id, else the id."""
    bound = current_correlation_id()
    if bound:
        return bound
    given = usable_correlation_id(getattr(request, CORRELATION_HEADER, None))
    if given:
        return given
    found = getattr(request, "root_id", None) or getattr(request, "id", None)
    return str(found) if found else None
