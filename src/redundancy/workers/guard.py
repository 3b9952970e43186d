"""The message guard: every task message is checked before Celery builds a request.

Celery's default strategy trusts a message's shape. A JSON body under a registered task
name that is not ``[args, kwargs, embed]`` raises inside the worker's *main* process,
which exits; the message goes back on the queue and stops the next worker too. A refused
serializer (pickle, YAML) is rejected by Celery, but with no result stored: its caller
waits on PENDING forever.

``guarded_strategy`` is ``RedundancyTask.Strategy``, so every task of the app has it
(Celery's built-ins too: they are made from the app's task class). It checks a message
and hands it to Celery's default strategy only when it is well formed. A bad message is

* rejected without requeue: on RabbitMQ the task queues dead-letter it to
  ``names.DEAD_LETTER_QUEUE``; on Redis it is first copied to the stream
  ``keys.task_dead_letters()`` (reason, headers, body as received);
* recorded as FAILURE (``MalformedMessageError``) under its id, when it has one;
* counted in ``redundancy_messages_rejected_total{reason}`` and logged once (one line).

A good message gets its time budget from its input size before Celery sees it
(``redundancy.workers.budget``): the hard limit that stops native work.

The check costs the decode Celery does anyway (kombu caches it for the request) plus a
pydantic validation of the headers and the body's outer shape, never of the arguments
(the task validates those). Rejecting is the rare path; every step of it is a hook that
logs and counts instead of failing, and the message is rejected whatever they do.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Required

from celery import signals
from celery.worker.strategy import default as celery_default_strategy
from kombu.exceptions import ContentDisallowed
from pydantic import Field, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from typing_extensions import TypedDict

from redundancy import keys, names, resources
from redundancy.config import get_settings
from redundancy.errors import MalformedMessageError
from redundancy.workers.budget import budget_headers

log = logging.getLogger(__name__)

MAX_ID_CHARS: Final = 255
"""Longest task id accepted (ids become result-backend keys)."""
DEAD_LETTER_MAXLEN: Final = 10_000
"""Redis: approximate number of rejected messages the dead-letter stream keeps."""
DETAIL_CHARS: Final = 300
"""Longest explanation stored with a rejection."""

UNDECODABLE: Final = "undecodable"
REFUSED_CONTENT: Final = "refused_content"
MALFORMED_BODY: Final = "malformed_body"
MALFORMED_HEADERS: Final = "malformed_headers"
REASONS: Final = (UNDECODABLE, REFUSED_CONTENT, MALFORMED_BODY, MALFORMED_HEADERS)
"""The ``reason`` label values of ``redundancy_messages_rejected_total``."""

TaskId = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS)]
Seconds = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]


class TaskHeaders(TypedDict, total=False):
    """What the worker's main process reads from a message's headers (protocol 2) or
    body (protocol 1). Celery adds headers across versions: unknown ones pass. (Typed
    dicts, not models: half the cost, and nothing is built from them.)"""

    id: Required[TaskId]
    task: Required[Annotated[StrictStr, Field(min_length=1)]]
    timelimit: Annotated[list[Seconds | None], Field(min_length=2, max_length=2)] | None
    retries: Annotated[StrictInt, Field(ge=0)] | None
    eta: StrictStr | None
    expires: StrictStr | None
    shadow: StrictStr | None
    root_id: StrictStr | None
    parent_id: StrictStr | None
    group: StrictStr | None
    argsrepr: StrictStr | None
    kwargsrepr: StrictStr | None


class Embed(TypedDict, total=False):
    """The third part of a protocol 2 body: what runs after the task."""

    callbacks: list[dict[str, Any]] | None
    errbacks: list[dict[str, Any]] | None
    chain: list[dict[str, Any]] | None
    chord: dict[str, Any] | None


class ArgsKwargs(TypedDict, total=False):
    """A protocol 1 (or hybrid) body's arguments (its other fields are checked as headers)."""

    args: list[Any]
    kwargs: dict[str, Any]


HEADERS: Final = TypeAdapter(TaskHeaders)
PROTOCOL_1_BODY: Final = TypeAdapter(ArgsKwargs)
PROTOCOL_2_BODY: Final = TypeAdapter(tuple[list[Any], dict[str, Any], Embed | None])


@dataclass(frozen=True)
class Rejection:
    """Why a message was refused, and what it claimed to be."""

    reason: str
    detail: str
    task_id: str | None
    task_name: str | None


def _first_error(exc: PydanticValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "value"
    return f"{where}: {error['msg']}"


def _claimed(fields: Any) -> tuple[str | None, str | None]:
    """The id and task name a message claims, when they are usable as such."""
    if not isinstance(fields, dict):
        return None, None
    task_id, name = fields.get("id"), fields.get("task")
    usable_id = task_id if isinstance(task_id, str) and 0 < len(task_id) <= MAX_ID_CHARS else None
    return usable_id, name if isinstance(name, str) else None


def inspect_message(message: Any, body: Any) -> Rejection | None:
    """None when Celery can build a request from ``message``, else why not.

    ``body`` is what Celery's consumer passes its strategies: None for protocol 2 (the
    body is decoded here, once: kombu caches it for the request) and the decoded dict
    for protocol 1, whose fields are in the body rather than the headers.
    """
    headers = message.headers
    protocol_2 = body is None
    task_id, name = _claimed(headers if protocol_2 else body)
    if protocol_2:
        try:
            body = message.payload
        except ContentDisallowed as exc:
            return Rejection(REFUSED_CONTENT, f"refused content: {exc}", task_id, name)
        except Exception as exc:  # kombu raises DecodeError, codecs and zlib their own
            detail = f"undecodable {message.content_type!r} body: {type(exc).__name__}: {exc}"
            return Rejection(UNDECODABLE, detail, task_id, name)
    # Celery's own dispatch: a dict body with "args" is a hybrid (or protocol 1) message
    # whose fields merge under the headers; else protocol 2's list, or protocol 1's dict.
    hybrid = isinstance(body, dict) and "args" in body
    try:
        if hybrid:
            PROTOCOL_1_BODY.validate_python(body)
            fields = {**body, **headers}
            task_id, name = _claimed(fields)
        elif protocol_2:
            PROTOCOL_2_BODY.validate_python(body)
            fields = headers
        else:
            PROTOCOL_1_BODY.validate_python(body)
            fields = body
    except PydanticValidationError as exc:
        shape = "[args, kwargs, embed]" if protocol_2 and not hybrid else "{args, kwargs}"
        detail = f"body is not Celery's {shape} ({_first_error(exc)})"
        return Rejection(MALFORMED_BODY, detail, task_id, name)
    try:
        HEADERS.validate_python(fields)
    except PydanticValidationError as exc:
        return Rejection(MALFORMED_HEADERS, f"headers: {_first_error(exc)}", task_id, name)
    return None


class Rejecter:
    """What happens to a refused message (see the module docstring), for one consumer."""

    _declared_lock = threading.Lock()
    _declared = False

    def __init__(self, app: Any, consumer: Any) -> None:
        self.app = app
        self.consumer = consumer

    def amqp(self) -> bool:
        connection = getattr(self.consumer, "connection", None) or self.app.connection_for_read()
        return bool(connection.transport.driver_type == "amqp")

    @classmethod
    def declare_dead_letter_queue(cls, app: Any) -> None:
        """RabbitMQ: make the dead-letter exchange and queue exist (once per process;
        again after a failure). A fanout exchange: every queue's rejects land in one queue."""
        if cls._declared:
            return
        from kombu.entity import Exchange, Queue

        with cls._declared_lock, app.connection_for_write() as connection:
            if cls._declared or connection.transport.driver_type != "amqp":
                return
            exchange = Exchange(names.DEAD_LETTER_EXCHANGE, type="fanout", durable=True)
            queue = Queue(names.DEAD_LETTER_QUEUE, exchange, durable=True)
            queue(connection.default_channel).declare()
            cls._declared = True

    def reject(self, message: Any, rejection: Rejection) -> None:
        error = MalformedMessageError(
            f"task message rejected ({rejection.reason}): {rejection.detail}"[:DETAIL_CHARS]
        )
        queue = (message.delivery_info or {}).get("routing_key")
        amqp = self._step("transport", self.amqp, default=False)
        where = names.DEAD_LETTER_QUEUE if amqp else keys.task_dead_letters()
        log.error(
            "%s; task %s id %s from queue %s: dead-lettered to %s",
            error,
            rejection.task_name,
            rejection.task_id,
            queue,
            where,
        )
        self._step("metrics", lambda: _count(rejection.reason))
        if amqp:
            self._step("dead_letter", lambda: self.declare_dead_letter_queue(self.app))
        else:
            self._step("dead_letter", lambda: _copy_to_stream(message, rejection, queue))
        if rejection.task_id is not None:
            self._step("result", lambda: self._record(rejection, error))
        message.reject_log_error(log, self.consumer.connection_errors, requeue=False)
        self._step("signal", lambda: self._announce(message, rejection, error))

    def _record(self, rejection: Rejection, error: MalformedMessageError) -> None:
        self.app.backend.mark_as_failure(rejection.task_id, error, call_errbacks=False)

    def _announce(self, message: Any, rejection: Rejection, error: MalformedMessageError) -> None:
        signals.task_rejected.send(sender=self.consumer, message=message, exc=error)
        dispatcher = getattr(self.consumer, "event_dispatcher", None)
        if rejection.task_id is not None and dispatcher is not None and dispatcher.enabled:
            dispatcher.send("task-failed", uuid=rejection.task_id, exception=repr(error))

    @staticmethod
    def _step(what: str, step: Callable[[], Any], default: Any = None) -> Any:
        """A hook: a failing step is logged and counted; the message is rejected anyway."""
        try:
            return step()
        except Exception:
            log.warning("message guard: %s failed", what, exc_info=True)
            from redundancy.observability.metrics import HOOK_ERRORS

            HOOK_ERRORS.labels(f"guard_{what}").inc()
            return default


def _count(reason: str) -> None:
    from redundancy.observability.metrics import MESSAGES_REJECTED

    MESSAGES_REJECTED.labels(reason).inc()


def _copy_to_stream(message: Any, rejection: Rejection, queue: str | None) -> None:
    client = resources.jobs_client()
    if client is None:
        return
    body = message.body
    fields: dict[Any, Any] = {
        "reason": rejection.reason,
        "detail": rejection.detail,
        "task": rejection.task_name or "",
        "id": rejection.task_id or "",
        "queue": queue or "",
        "content_type": message.content_type or "",
        "content_encoding": message.content_encoding or "",
        "headers": json.dumps(message.headers, default=repr),
        "properties": json.dumps(message.properties, default=repr),
        "body": body if isinstance(body, bytes) else str(body).encode(),
        "rejected_at": f"{time.time():.3f}",
    }
    client.xadd(keys.task_dead_letters(), fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True)


def set_budget(message: Any, body: Any, task_name: str) -> None:
    """The per-message hard time limit from the input size (``redundancy.workers.budget``),
    where Celery reads it: the headers, or a protocol 1 body that has no ``args``."""
    payload = message.payload if body is None else body
    if isinstance(payload, dict):
        args, kwargs = payload.get("args") or (), payload.get("kwargs") or {}
        target = message.headers if body is None or "args" in payload else body
    else:
        args, kwargs, target = payload[0], payload[1], message.headers
    budget_headers(target, task_name, args, kwargs, get_settings())


UPGRADE_HINT: Final = (
    "RabbitMQ queue {queue!r} was declared without the dead-letter exchange this version "
    "declares ({detail}). Either drain and delete the task queues (workers declare them "
    "again), or keep them: set TASK_QUEUE_DEAD_LETTERING=false and give them the exchange "
    "by policy: rabbitmqctl set_policy crd-dead-letter '^(analysis|similarity|batch)$' "
    '\'{{"dead-letter-exchange":"{exchange}"}}\' --apply-to queues (README "Security")'
)


def check_task_queues(app: Any) -> None:
    """RabbitMQ: declare the task queues and the dead-letter queue before the worker
    starts, turning a refused redeclaration (PRECONDITION_FAILED: a queue an older
    version declared without the dead-letter argument) into a ConfigurationError that
    says how to upgrade. An unreachable broker is left to Celery's start-up retries."""
    from amqp.exceptions import PreconditionFailed

    from redundancy.errors import ConfigurationError

    with app.connection_for_write() as connection:
        if connection.transport.driver_type != "amqp":
            return
        try:
            connection.ensure_connection(max_retries=1)
        except Exception:
            return
        for queue in app.conf.task_queues or ():
            try:
                queue(connection.channel()).declare()
            except PreconditionFailed as exc:
                raise ConfigurationError(
                    UPGRADE_HINT.format(
                        queue=queue.name, detail=exc.reply_text, exchange=names.DEAD_LETTER_EXCHANGE
                    )
                ) from None
    Rejecter.declare_dead_letter_queue(app)


def guarded_strategy(task: Any, app: Any, consumer: Any, **options: Any) -> Callable[..., Any]:
    """Celery's default strategy behind the guard (Celery calls this once per task and
    consumer start, with the strategy's documented arguments)."""
    handle = celery_default_strategy(task, app, consumer, **options)
    rejecter = Rejecter(app, consumer)
    Rejecter._step("declare", lambda: Rejecter.declare_dead_letter_queue(app))

    def task_message_handler(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kwargs: Any
    ) -> Any:
        rejection = inspect_message(message, body)
        if rejection is not None:
            return rejecter.reject(message, rejection)
        set_budget(message, body, task.name)
        return handle(message, body, ack, reject, callbacks, **kwargs)

    return task_message_handler


__all__ = [
    "REASONS",
    "Rejection",
    "TaskHeaders",
    "check_task_queues",
    "guarded_strategy",
    "inspect_message",
]
