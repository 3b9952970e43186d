"""The Redis broker transport: kombu's, with entries that are not a kombu envelope
dead-lettered instead of stopping the worker.

On a Redis broker a task message is a JSON *envelope* in a list (``{"body", "headers",
"properties": {"delivery_tag", "delivery_info", "body_encoding"}, ...}``). kombu reads
one with ``BRPOP`` and parses it before any Celery code (and so before the message
guard, ``redundancy.workers.guard``) runs: an entry that is not JSON, or JSON of another
shape (``LPUSH analysis garbage``, a list, an envelope without ``properties``, a body
that is not base64), raised in the worker's main process, which exited. The entry was
already popped, so it stopped one worker, not the fleet, but anyone who could write to
the list could stop workers one by one.

``Transport`` is kombu's Redis transport with two catches, both on the rare path only:
the envelope's JSON (``_brpop_read``/``_get``) and its shape (``GuardedMessage``, raised
as ``MalformedEnvelopeError`` while kombu builds its message, before the message is
tracked as unacknowledged). The entry goes to the task dead-letter stream with reason
``malformed_envelope``, is counted in ``redundancy_messages_rejected_total``, is
recorded as FAILURE when it names a task id, and is logged once; the worker reads on.

It also keeps one redis-py client per connection pool where kombu made a new one for
every message it tracks or acknowledges and every publish (``_create_client``).

``create_app`` selects it for ``redis://`` and ``rediss://`` brokers (Celery's
``broker_transport``, ``celeryconfig.broker_transport``), for workers and producers alike.
"""

from __future__ import annotations

import binascii
import json
import logging
import time
from collections.abc import Callable
from queue import Empty
from typing import Any, Final

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual.base import Message as VirtualMessage

from redundancy import keys, resources
from redundancy.errors import MalformedMessageError

log = logging.getLogger(__name__)

MALFORMED_ENVELOPE: Final = "malformed_envelope"
"""The ``reason`` of an entry that is not a kombu envelope (beside the guard's reasons)."""
RAW_CHARS: Final = 64_000
"""Longest part of a rejected entry kept in the dead-letter stream."""


class MalformedEnvelopeError(MalformedMessageError):
    """A broker entry that is not a kombu envelope; carries what was read."""

    def __init__(self, detail: str, raw: Any) -> None:
        super().__init__(f"task message rejected ({MALFORMED_ENVELOPE}): {detail}")
        self.detail = detail
        self.raw = raw


class GuardedMessage(VirtualMessage):
    """kombu's message, built only from a well-formed envelope."""

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        try:
            super().__init__(payload, channel=channel, **kwargs)  # type: ignore[no-untyped-call]
        except (KeyError, TypeError, AttributeError, ValueError, binascii.Error) as exc:
            raise MalformedEnvelopeError(f"{type(exc).__name__}: {exc}", payload) from None
        info = self.delivery_info
        if not (
            isinstance(self.delivery_tag, str)
            and isinstance(info, dict)
            and isinstance(info.get("exchange"), str)
            and isinstance(info.get("routing_key"), str)
            and isinstance(self.headers, dict)
        ):
            raise MalformedEnvelopeError(
                "properties.delivery_tag, properties.delivery_info.exchange and "
                ".routing_key must be strings and headers an object",
                payload,
            )


class Channel(kombu_redis.Channel):
    Message = GuardedMessage
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu's ``conn_or_acquire`` builds a new redis-py client for every message it
        tracks as unacknowledged, every ack and every publish: ~70 µs each (redis-py
        copies its ~170 response callbacks into every client), twice per task in a
        worker's main process. A client holds no connection of its own (its pool does), so
        one per pool serves them all; a new pool (after a reconnect) gets a new client."""
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()  # type: ignore[no-untyped-call]
        return client

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[no-untyped-call]
        except json.JSONDecodeError as exc:
            dead_letter(MalformedEnvelopeError(f"not JSON: {exc.msg}", exc.doc))
        except RecursionError:
            dead_letter(MalformedEnvelopeError("JSON nested too deeply", "(not kept)"))
        except MalformedEnvelopeError as exc:
            dead_letter(exc)
        return True  # an entry was read (and dropped): poll again at once

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        try:
            message = super()._get(queue)  # type: ignore[no-untyped-call]
        except json.JSONDecodeError as exc:
            dead_letter(MalformedEnvelopeError(f"not JSON: {exc.msg}", exc.doc), queue)
            raise Empty() from None
        except RecursionError:
            dead_letter(MalformedEnvelopeError("JSON nested too deeply", "(not kept)"), queue)
            raise Empty() from None
        if not isinstance(message, dict):
            dead_letter(MalformedEnvelopeError("not a JSON object", message), queue)
            raise Empty()
        return message


class Transport(kombu_redis.Transport):
    Channel = Channel


def dead_letter(error: MalformedEnvelopeError, queue: str | None = None) -> None:
    """Log, count, copy to the dead-letter stream and record what can be recorded.
    Every step is best effort: the entry is gone from the list whatever they do."""
    raw = error.raw if isinstance(error.raw, str) else json.dumps(error.raw, default=repr)
    headers = error.raw.get("headers") if isinstance(error.raw, dict) else None
    task_id = headers.get("id") if isinstance(headers, dict) else None
    task_id = task_id if isinstance(task_id, str) and task_id else None
    log.error("%s; id %s: dead-lettered to %s", error, task_id, keys.task_dead_letters())
    steps: list[tuple[str, Callable[[], None]]] = [
        ("metrics", _count),
        ("dead_letter", lambda: _copy(error, raw, task_id, queue)),
    ]
    if task_id is not None:
        steps.append(("result", lambda: _record(task_id, error)))
    for what, step in steps:
        try:
            step()
        except Exception:
            log.warning("broker transport: %s of a malformed entry failed", what, exc_info=True)


def _count() -> None:
    from redundancy.observability.metrics import MESSAGES_REJECTED

    MESSAGES_REJECTED.labels(MALFORMED_ENVELOPE).inc()


def _copy(error: MalformedEnvelopeError, raw: str, task_id: str | None, queue: str | None) -> None:
    from redundancy.workers.guard import DEAD_LETTER_MAXLEN

    client = resources.jobs_client()
    if client is None:
        return
    fields = {
        "reason": MALFORMED_ENVELOPE,
        "detail": error.detail[:300],
        "id": task_id or "",
        "queue": queue or "",
        "body": raw[:RAW_CHARS],
        "rejected_at": f"{time.time():.3f}",
    }
    client.xadd(keys.task_dead_letters(), fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True)  # type: ignore[arg-type]


def _record(task_id: str, error: MalformedEnvelopeError) -> None:
    from redundancy.workers import app

    app.backend.mark_as_failure(task_id, MalformedMessageError(str(error)), call_errbacks=False)


__all__ = ["MALFORMED_ENVELOPE", "MalformedEnvelopeError", "Transport"]
