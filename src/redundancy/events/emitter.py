"""``emit``: the one way a finished job's event leaves the job -- into the outbox.

The event is written to the outbox (signed when EVENTS_SIGNING_KEY is set) and never sent
to the event broker by the job: a relay (``redundancy.events.relay``) moves the outbox
to it, so a broken broker delays events but never fails or slows a job. On a cluster
the relay is a process beside each worker; the embedded default keeps its outbox in
memory and relays inline, right after the write, through this process's one ``Relay``
(``inline_relay``). The whole path: docs/architecture.md §4.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Sequence

from redundancy import resources
from redundancy.events import metrics
from redundancy.events.models import DomainEvent
from redundancy.events.relay import Relay
from redundancy.events.wire import WireMessage, configured_signing_keys

log = logging.getLogger(__name__)

_exit_hook_registered = False


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


def emit_messages(messages: Sequence[WireMessage], what: str) -> None:
    """Put events already signed (a corpus's, as its store holds them: same id, same
    bytes) on the bus through the outbox, in one write. Like ``emit_safely`` it never
    raises: the caller's change is done and stored; ``what`` names it in the log."""
    if not messages or not events_enabled():
        return
    from redundancy.events.outbox import get_outbox

    try:
        outbox = get_outbox()
        outbox.append_many(messages)
        if not outbox.durable:
            inline_relay().try_step()
    except Exception:
        metrics.EVENTS_FAILED.labels("outbox").inc(len(messages))
        log.exception("%d events of %s could not be written to the outbox", len(messages), what)


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
    """This process's relay of its in-memory outbox (the embedded default): one per
    process (``resources.shared``, so a forked child builds its own); what it could not
    deliver is retried once more at exit."""
    return resources.shared("inline_relay", _new_inline_relay)


def _new_inline_relay() -> Relay:
    global _exit_hook_registered
    from redundancy.events.brokers import broker_from_settings
    from redundancy.events.outbox import get_outbox

    relay = Relay(get_outbox(), broker_from_settings())
    if not _exit_hook_registered:  # a forked child inherits the hook: it flushes its own
        atexit.register(_flush_at_exit)
        _exit_hook_registered = True
    return relay


def _flush_at_exit() -> None:
    relay: Relay | None = resources.built("inline_relay")  # this process's, never a parent's
    if relay is None:
        return
    left = relay.drain(timeout=relay.broker.publish_timeout)
    if left:
        log.error(
            "%d events could not reach the event broker before exit and are lost "
            "(the embedded default keeps its outbox in memory)",
            left,
        )
