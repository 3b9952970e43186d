"""The one small interface every event broker implements, with a sync and an async face.

Each backend writes its client code once, synchronously (``_connect``, ``_send``,
``_open_reader``...). Workers and scripts call the ``*_sync`` methods; asyncio code calls
the original service's coroutines (``await broker.connect()``, ``await broker.publish(e)``),
which run the same code in a thread so the event loop never blocks. Publishing an event
goes through ``EventPublisher`` (one path: serialise, sign, ``send_sync``).

Consuming is shared too: a reader fetches deliveries, and ``consume_sync`` verifies
(by default: it refuses to start without a key unless told ``verify=False``), filters,
drops repeats of a verified ``event_id``, calls the handler and only then acknowledges.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from redundancy.events import metrics
from redundancy.events.errors import (
    BrokerUnavailableError,
    InvalidEventError,
    MissingSigningKeyError,
)
from redundancy.events.models import DomainEvent
from redundancy.events.publisher import EventPublisher
from redundancy.events.wire import CONFIGURED, SigningKeys, WireMessage, resolve_signing_keys

log = logging.getLogger(__name__)

Handler = Callable[[DomainEvent], Any]
AsyncHandler = Callable[[DomainEvent], Awaitable[Any] | Any]
DEDUPE_CAPACITY = 100_000
POLL_SECONDS = 1.0


@dataclass
class Delivery:
    """One message fetched by a reader, with the handle its broker acknowledges by."""

    message: WireMessage | None
    token: Any
    problem: str | None = None
    """Why ``message`` is None (an unreadable entry: acknowledged and reported)."""


class Reader(ABC):
    """A broker-specific cursor: fetch deliveries, acknowledge them, close."""

    @abstractmethod
    def fetch(self, limit: int, wait: float) -> list[Delivery]: ...

    @abstractmethod
    def ack(self, delivery: Delivery) -> None: ...

    def close(self) -> None:  # noqa: B027 -- optional
        """Release the reader (unacknowledged deliveries go back to the broker)."""


class SeenIds:
    """The last ``capacity`` event ids handled: a redelivered event is dropped, not re-handled."""

    def __init__(self, capacity: int = DEDUPE_CAPACITY) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


class Sending:
    """Messages handed to a broker whose confirmations may still be on their way (what
    ``send_async`` returns). ``settled`` once every report arrived; ``error`` is the first
    failure (a batch with one is re-sent whole, or one by one when refused for good)."""

    def __init__(self, kind: str, count: int, *, metered: bool = True) -> None:
        self.kind = kind
        self.metered = metered
        """False when the caller counts the metrics itself (``send_sync``)."""
        self.count = count
        self.unconfirmed = count
        self.failed = 0
        self.error: Exception | None = None

    @property
    def settled(self) -> bool:
        return self.unconfirmed == 0

    @property
    def confirmed(self) -> bool:
        return self.unconfirmed == 0 and self.error is None

    def report(self, error: Exception | None = None, count: int = 1) -> None:
        """``count`` delivery reports arrived (``error``: they failed)."""
        self.unconfirmed -= count
        if error is not None:
            self.failed += count
            if self.error is None:
                self.error = error
        if not self.unconfirmed:
            self._counted()

    def give_up(self, error: Exception) -> None:
        """Reports that will not come (the client could not take the messages, or the
        wait for them ended): what is unconfirmed failed."""
        if self.unconfirmed:
            self.report(error, self.unconfirmed)

    def _counted(self) -> None:
        """Metrics once per batch, when its last report arrived (not per event: cheaper)."""
        if not self.metered:
            return
        if self.count > self.failed:
            metrics.EVENTS_PUBLISHED.labels(self.kind).inc(self.count - self.failed)
        if self.failed:
            metrics.EVENTS_FAILED.labels(self.kind).inc(self.failed)


class EventBroker(ABC):
    """Base of every backend. ``kind`` is the MESSAGE_BROKER_TYPE name and metrics label."""

    kind: ClassVar[str]
    confirms_async: ClassVar[bool] = False
    """True when ``send_async`` returns before the broker confirmed (the relay then keeps
    several batches in flight, EVENTS_RELAY_WINDOW); otherwise it is ``send_sync``."""

    def __init__(
        self, url: str, *, topic: str | None = None, publish_timeout: float | None = None
    ) -> None:
        from redundancy.config import get_settings

        settings = get_settings()
        self.url = url
        self.topic = topic or settings.events_topic
        self.publish_timeout = publish_timeout or settings.events_publish_timeout
        self._lock = threading.RLock()
        self._connected = False

    # --- what a backend implements ---------------------------------------------------

    @abstractmethod
    def _connect(self) -> None:
        """Open clients and declare what publishing needs; raise BrokerUnavailableError."""

    @abstractmethod
    def _disconnect(self) -> None: ...

    @abstractmethod
    def _send(self, messages: Sequence[WireMessage]) -> None:
        """Publish in order and return only when the broker confirmed every message."""

    def _send_async(self, messages: Sequence[WireMessage], sending: Sending) -> None:
        """Hand ``messages`` over in order; their reports reach ``sending`` from ``_poll``."""
        raise NotImplementedError

    def _sending(self, count: int) -> Sending:
        """The handle ``send_async`` returns (a backend may give one of its own)."""
        return Sending(self.kind, count)

    def _poll(self, timeout: float) -> None:  # noqa: B027 -- only with confirms_async
        """Serve the delivery reports that arrived, waiting up to ``timeout`` for one."""

    def _flush(self) -> None:  # noqa: B027 -- only with confirms_async
        """Wait until every message handed over has its report (bounded by the publish
        timeout: a message without confirmation by then is reported failed)."""

    @abstractmethod
    def _open_reader(
        self,
        group: str | None,
        event_types: frozenset[str] | None,
        from_beginning: bool,
        consumer: str,
    ) -> Reader: ...

    def _ensure_group(self, group: str, event_types: frozenset[str] | None) -> None:  # noqa: B027
        """Make ``group`` exist so it receives every event published from now on."""

    def describe(self) -> str:
        """Where events go, without credentials (for logs and ``crd doctor``)."""
        from redundancy.kv.clients import sanitize

        return f"{self.kind} {sanitize(self.url)} topic {self.topic}"

    # --- sync face ---------------------------------------------------------------------

    def connect_sync(self) -> None:
        with self._lock:
            if not self._connected:
                self._connect()
                self._connected = True

    def disconnect_sync(self) -> None:
        with self._lock:
            if self._connected:
                self._connected = False
                try:
                    self._disconnect()
                except Exception:  # closing a dead connection may fail; it is closed anyway
                    log.debug("disconnect of %s failed", self.kind, exc_info=True)

    def send_sync(self, messages: Sequence[WireMessage]) -> None:
        """Publish already-serialised messages; raises BrokerUnavailableError to retry."""
        if not messages:
            return
        with self._lock:
            try:
                self.connect_sync()
                self._send(messages)
            except Exception as exc:
                metrics.EVENTS_FAILED.labels(self.kind).inc(len(messages))
                if isinstance(exc, BrokerUnavailableError):
                    self._reset_after_failure()
                raise
        metrics.EVENTS_PUBLISHED.labels(self.kind).inc(len(messages))

    def send_async(self, messages: Sequence[WireMessage]) -> Sending:
        """Hand messages over in order without waiting for the broker: their reports reach
        the returned ``Sending`` during ``poll_sync``/``flush_sync``. Never raises for a
        broker failure (it is the handle's ``error``). On a broker that cannot confirm
        asynchronously this is ``send_sync``: the handle comes back settled."""
        sending = self._sending(len(messages))
        if not self.confirms_async:
            try:
                self.send_sync(messages)
            except Exception as exc:  # send_sync counted the failure
                sending.error, sending.unconfirmed = exc, 0
            sending.unconfirmed = 0
            return sending
        with self._lock:
            try:
                self.connect_sync()
                self._send_async(messages, sending)
            except Exception as exc:
                sending.give_up(exc)
                sending.error = sending.error or exc  # conservative: re-sent whole
        return sending

    def poll_sync(self, timeout: float) -> None:
        """Serve the delivery reports of ``send_async`` (waits up to ``timeout`` for one)."""
        if self.confirms_async:
            with self._lock:
                if self._connected:
                    self._poll(timeout)

    def flush_sync(self) -> None:
        """Wait for the report of everything ``send_async`` handed over."""
        if self.confirms_async:
            with self._lock:
                if self._connected:
                    self._flush()

    def _reset_after_failure(self) -> None:
        """Drop clients after an outage so the next attempt starts from a fresh connection."""
        self.disconnect_sync()

    def publish_sync(self, event: DomainEvent, signing_key: SigningKeys = CONFIGURED) -> None:
        """``EventPublisher(self, signing_key).publish_sync(event)``: signed with the
        configured keys unless ``signing_key`` says otherwise (``None``: unsigned)."""
        EventPublisher(self, signing_key).publish_sync(event)

    def ensure_group_sync(self, group: str, event_types: Iterable[str] | None = None) -> None:
        with self._lock:
            self.connect_sync()
            self._ensure_group(group, _types(event_types))

    def consume_sync(
        self,
        handler: Handler,
        *,
        group: str | None = None,
        event_types: Iterable[str] | None = None,
        max_events: int | None = None,
        timeout: float | None = None,
        from_beginning: bool = False,
        signing_key: SigningKeys = CONFIGURED,
        verify: bool = True,
        consumer: str | None = None,
        stop: threading.Event | None = None,
        batch: int = 100,
    ) -> int:
        """Call ``handler`` for each event, acknowledging only after it returns.

        ``group`` names a durable consumer group (each event goes to one member; what the
        group has not acknowledged is redelivered); without it, a live tail from now (or
        from the start). Repeats of an ``event_id`` are acknowledged and skipped. A handler
        that raises stops the loop with its message unacknowledged (so it comes back).
        Returns after ``max_events`` handled, ``timeout`` seconds without events, or ``stop``.

        Events are verified with ``signing_key`` (by default the configured keys:
        EVENTS_SIGNING_KEY and, during a rotation, EVENTS_SIGNING_KEYS_PREVIOUS); forged,
        relabelled or unsigned ones are acknowledged, counted and dropped. Without a key
        this raises ``MissingSigningKeyError`` before reading anything, unless
        ``verify=False`` says to accept unsigned events.
        """
        keys = resolve_signing_keys(signing_key) if verify else ()
        if verify and not keys:
            raise MissingSigningKeyError(
                "consumers verify events by default and no key is configured: set "
                "EVENTS_SIGNING_KEY (or pass signing_key=...), or pass verify=False to "
                "accept unsigned events"
            )
        types = _types(event_types)
        seen = SeenIds()
        reader = self._open_reader(group, types, from_beginning, consumer or _consumer_name())
        handled = 0
        idle_since = time.monotonic()
        try:
            while stop is None or not stop.is_set():
                wait = POLL_SECONDS
                if timeout is not None:
                    left = timeout - (time.monotonic() - idle_since)
                    if left <= 0:
                        break
                    wait = min(wait, left)
                limit = batch if max_events is None else max(1, min(batch, max_events - handled))
                deliveries = reader.fetch(limit, wait)
                if deliveries:
                    idle_since = time.monotonic()
                for delivery in deliveries:
                    if self._dispatch(delivery, handler, types, seen, keys):
                        handled += 1
                    reader.ack(delivery)
                    if max_events is not None and handled >= max_events:
                        return handled
        finally:
            reader.close()
        return handled

    def _dispatch(
        self,
        delivery: Delivery,
        handler: Handler,
        types: frozenset[str] | None,
        seen: SeenIds,
        keys: tuple[bytes, ...],
    ) -> bool:
        message = delivery.message
        if message is None:
            log.error("%s: unreadable event skipped: %s", self.kind, delivery.problem)
            metrics.EVENTS_CONSUMED.labels(self.kind, "rejected").inc()
            return False
        if types is not None and message.event_type not in types:
            metrics.EVENTS_CONSUMED.labels(self.kind, "skipped").inc()
            return False
        try:
            event = message.event(keys or None)  # id and type are the signed ones from here
        except InvalidEventError as exc:
            log.error("%s: event rejected: %s", self.kind, exc)
            metrics.EVENTS_CONSUMED.labels(self.kind, "rejected").inc()
            return False
        if message.event_id in seen:
            metrics.EVENTS_CONSUMED.labels(self.kind, "duplicate").inc()
            return False
        handler(event)
        seen.add(message.event_id)
        metrics.EVENTS_CONSUMED.labels(self.kind, "handled").inc()
        return True

    def __enter__(self) -> EventBroker:
        self.connect_sync()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect_sync()

    # --- async face (the original service's API) ------------------------------------------

    async def connect(self) -> None:
        await asyncio.to_thread(self.connect_sync)

    async def disconnect(self) -> None:
        await asyncio.to_thread(self.disconnect_sync)

    async def publish(self, event: DomainEvent, signing_key: SigningKeys = CONFIGURED) -> None:
        await asyncio.to_thread(self.publish_sync, event, signing_key)

    async def consume(self, handler: AsyncHandler, **options: Any) -> int:
        """``consume_sync`` for asyncio code; ``handler`` may be a coroutine function."""
        loop = asyncio.get_running_loop()

        def call(event: DomainEvent) -> Any:
            result = handler(event)
            if inspect.isawaitable(result):
                return asyncio.run_coroutine_threadsafe(_awaited(result), loop).result()
            return result

        return await asyncio.to_thread(self.consume_sync, call, **options)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _types(event_types: Iterable[str] | None) -> frozenset[str] | None:
    if event_types is None:
        return None
    types = frozenset(event_types)
    return types or None


def _consumer_name() -> str:
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"
