"""The correlation id of a job: one function, used by events (and later logs and traces).

Producers may set a correlation id on the task message (observability's job); until one
is set, a job's correlation id is the root task id of its workflow, so every event of a
batch (its sub-tasks, the merge, the webhook) shares the batch's root id.
"""

from __future__ import annotations

from typing import Any


def correlation_id_of(request: Any) -> str | None:
    """The producer's correlation id, else the workflow's root task id, else the task id.

    Celery fills ``request.correlation_id`` with the task's own id when the producer set
    none, so only a different value counts as the producer's.
    """
    task_id = getattr(request, "id", None)
    given = getattr(request, "correlation_id", None)
    if given and given != task_id:
        return str(given)
    root = getattr(request, "root_id", None)
    return str(root or task_id) if (root or task_id) else None
