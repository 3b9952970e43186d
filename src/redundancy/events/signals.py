"""Celery signal handlers of the events; ``register()`` connects them (``create_app`` does).

In a worker's pool process Celery fires ``task_success`` / ``task_failure`` after the
result is stored and before the parent acknowledges the task message (``task_acks_late``).
The handlers write the job's event to the outbox then (``emitter.emit``), so an event is
durable before its job's message is acked: a crash in between redelivers the job, which
writes the event again with the same deterministic ``event_id``. Which job emits which
event is ``redundancy.events.factories``'s business.

On a cluster the result backend (``redundancy.workers.results``) usually writes a
success's event already, in the round trip that stores the result (``event_with_result``
builds it); it marks the request (``STORED_WITH_RESULT``) and ``on_task_success`` then
writes nothing. Whenever that path did not write it, the handler does.

``worker_ready`` / ``worker_shutdown`` start and stop the outbox relay beside the worker
(``redundancy.events.relay``). A handler never fails the job: it logs and counts.
"""

from __future__ import annotations

import logging
from typing import Any

from redundancy import names
from redundancy.events import metrics, relay
from redundancy.events.emitter import emit_safely, events_enabled
from redundancy.events.factories import SUCCESS_EVENTS, failure_event
from redundancy.events.wire import WireMessage, configured_signing_keys

log = logging.getLogger(__name__)

STORED_WITH_RESULT = "crd_event_stored"
"""Attribute the result backend sets on a task's request once the job's event is in the
outbox, written together with the result."""


def event_with_result(request: Any, result: Any) -> WireMessage | None:
    """The signed outbox message of a successful job's event, for the result backend to
    write with the result; None when the task emits none (or events are off)."""
    build = SUCCESS_EVENTS.get(getattr(request, "task", None) or "")
    if build is None or not isinstance(result, dict) or not events_enabled():
        return None
    return WireMessage.of(build(request, result), configured_signing_keys())


def on_task_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    build = SUCCESS_EVENTS.get(getattr(sender, "name", ""))
    if build is None or not events_enabled():
        return
    if getattr(sender.request, STORED_WITH_RESULT, False):
        return
    try:
        event = build(sender.request, result)
    except Exception:
        metrics.EVENTS_FAILED.labels("outbox").inc()
        log.exception("cannot build the event of %s[%s]", sender.name, sender.request.id)
        return
    emit_safely(event)


def on_task_failure(
    sender: Any = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    name = getattr(sender, "name", "")
    if not name.startswith(names.TASK_PREFIX) or not events_enabled():
        return
    try:
        event = failure_event(name, sender.request, exception or Exception("unknown"), args, kwargs)
    except Exception:
        metrics.EVENTS_FAILED.labels("outbox").inc()
        log.exception("cannot build the failure event of %s", name)
        return
    emit_safely(event)


def start_relay(**_: Any) -> None:
    relay.start_beside_worker()


def stop_relay(**_: Any) -> None:
    relay.stop_beside_worker()


def register() -> None:
    """Connect the handlers (idempotent: Celery keeps one connection per receiver)."""
    from celery import signals

    signals.task_success.connect(on_task_success, weak=False)
    signals.task_failure.connect(on_task_failure, weak=False)
    signals.worker_ready.connect(start_relay, weak=False)
    signals.worker_shutdown.connect(stop_relay, weak=False)
