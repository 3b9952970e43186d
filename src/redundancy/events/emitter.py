"""``emit``: the one way a finished job's event leaves the job -- into the outbox.

The event is written to the outbox (signed when EVENTS_SIGNING_KEY is set) and never sent
to the event broker by the job: a relay (``redundancy.events.relay``) moves the outbox
to it, so a broken broker delays events but never fails or slows a job. On a cluster
the relay is a process beside each worker; the embedded default keeps its outbox in
memory and relays inline, right after the write, through this process's one ``Relay``
(``inline_relay``).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading

from redundancy.events import metrics
from redundancy.events.models import DomainEvent
from redundancy.events.relay import Relay
from redundancy.events.wire import WireMessage, configured_signing_keys

log = logging.getLogger(__name__)

_relay: Relay | None = None
_relay_pid: int | None = None
_relay_lock = threading.Lock()
_exit_hook_pid: int | None = None


def events_enabled() -> bool:
    from redundancy.config import get_settings

    return get_settings().events_enabled


def emit(event: DomainEvent) -> None:
    """Write ``event`` to the outbox (nothing when EVENTS_ENABLED=false).

    Raises BrokerUnavailableError when the outbox cannot be written after brief retries.
    In the embedded default the event is then relayed at once, in this thread.
    """
    if not events_enabled():
        return
    from redundancy.events.outbox import get_outbox

    outbox = get_outbox()
    outbox.append(WireMessage.of(event, configured_signing_keys()))
    if not outbox.durable:
        inline_relay().try_step()


def emit_safely(event: DomainEvent | None) -> None:
    """``emit`` for signal handlers: a hook never fails the job -- it logs and counts."""
    if event is None:
        return
    try:
        emit(event)
    except Exception:
        metrics.EVENTS_FAILED.labels("outbox").inc()
        log.exception(
            "event %s (%s) could not be written to the outbox and is lost",
            event.event_id,
            event.event_type,
        )


def inline_relay() -> Relay:
    """This process's relay of its in-memory outbox (the embedded default), built once per
    process; what it could not deliver is retried once more at exit."""
    global _relay, _relay_pid, _exit_hook_pid
    with _relay_lock:
        if _relay is None or _relay_pid != os.getpid():
            from redundancy.events.brokers import broker_from_settings
            from redundancy.events.outbox import get_outbox

            _relay = Relay(get_outbox(), broker_from_settings())
            _relay_pid = os.getpid()
        if _exit_hook_pid != _relay_pid:
            atexit.register(_flush_at_exit)
            _exit_hook_pid = _relay_pid
        return _relay


def _flush_at_exit() -> None:
    relay = _relay
    if relay is None or _relay_pid != os.getpid():
        return
    left = relay.drain(timeout=relay.broker.publish_timeout)
    if left:
        log.error(
            "%d events could not reach the event broker before exit and are lost "
            "(the embedded default keeps its outbox in memory)",
            left,
        )
