"""The relay: moves events from the outbox to the event broker, oldest first.

One relay at a time holds the lease and drains the outbox in order, so events of an
aggregate reach the broker in the order their jobs finished; others wait as standbys
and take over within the lease time when it dies. An entry leaves the outbox only after
the broker confirmed it: a relay killed mid-batch makes the next one publish that batch
again (duplicates carry the same ``event_id``). While the broker is down the relay backs
off exponentially with jitter and nothing is skipped. Entries no retry can publish
(unreadable, or refused for good) go to a dead-letter stream and are counted.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from redundancy.events import metrics, webhooks
from redundancy.events.brokers.base import EventBroker
from redundancy.events.errors import BrokerUnavailableError, InvalidEventError, PublishRejectedError
from redundancy.events.outbox import Outbox
from redundancy.events.wire import WireMessage
from redundancy.kv.lease import Lease

log = logging.getLogger(__name__)

RETRY_START = 0.5
GAUGE_EVERY = 1.0
IDLE_WAIT = 0.5
"""Longest wait for new outbox entries (also how long a stopping relay may take)."""
LINGER = 0.02
"""Pause after a partial batch, so a trickle of events is relayed a few at a time."""


def backoff(failures: int, cap: float, start: float = RETRY_START) -> float:
    """The webhooks' exponential back-off with jitter, from ``start`` up to ``cap``."""
    return webhooks.backoff(failures, start, cap)


class Relay:
    def __init__(
        self,
        outbox: Outbox,
        broker: EventBroker,
        *,
        batch: int | None = None,
        retry_max: float | None = None,
        lease_ttl: float | None = None,
    ) -> None:
        from redundancy.config import get_settings

        s = get_settings()
        self.outbox = outbox
        self.broker = broker
        self.batch = batch or s.events_relay_batch
        self.retry_max = retry_max or s.events_relay_retry_max
        self.lease_ttl = lease_ttl or s.events_relay_lease_ttl
        self.lease: Lease = outbox.lease(self.lease_ttl)
        self.failures = 0
        self.retry_at = 0.0
        self.relayed = 0
        self._last_id: str | None = None
        self._gauges_at = 0.0
        self._renewed_at = 0.0

    # --- one step ----------------------------------------------------------------------

    def step(self) -> int:
        """Relay up to one batch; returns how many left the outbox.

        Raises BrokerUnavailableError (nothing removed) when the broker is down.
        """
        entries = self.outbox.peek(self.batch)
        messages: list[tuple[str, WireMessage, dict[Any, Any]]] = []
        for entry_id, fields in entries:
            try:
                messages.append((entry_id, WireMessage.from_fields(fields), fields))
            except InvalidEventError as exc:
                self._dead_letter(entry_id, fields, f"unreadable: {exc}")
        if not messages or not self._renew_before_publishing():
            return 0
        try:
            self.broker.send_sync([m for _, m, _ in messages])
        except PublishRejectedError:
            return self._one_by_one(messages)
        self.outbox.remove([entry_id for entry_id, _, _ in messages])
        self._last_id = messages[-1][0]
        self.relayed += len(messages)
        return len(messages)

    def _one_by_one(self, messages: list[tuple[str, WireMessage, dict[Any, Any]]]) -> int:
        """A batch with a message refused for good: find it, keep the order for the rest."""
        done = 0
        for entry_id, message, fields in messages:
            if not self._renew_before_publishing():
                break
            try:
                self.broker.send_sync([message])
            except PublishRejectedError as exc:
                self._dead_letter(entry_id, fields, f"refused: {exc}")
                continue
            self.outbox.remove([entry_id])
            done += 1
        self.relayed += done
        return done

    def _renew_before_publishing(self) -> bool:
        """Renew the lease right before a publish, so it outlives the publish (settings keep
        EVENTS_PUBLISH_TIMEOUT + 1 below half the lease): a standby never takes over while
        this relay may still be publishing, which would break the order per aggregate."""
        if not self.lease.renew():
            log.warning("outbox relay lost its lease; another relay continues")
            return False
        self._renewed_at = time.monotonic()
        return True

    def _dead_letter(self, entry_id: str, fields: dict[Any, Any], reason: str) -> None:
        log.error("outbox entry %s moved to the dead letters: %s", entry_id, reason)
        self.outbox.dead_letter(entry_id, fields, reason)
        metrics.EVENTS_DEAD_LETTERED.labels(reason.split(":", 1)[0]).inc()

    def try_step(self) -> int:
        """``step`` unless backing off; never raises (the embedded default's inline relay)."""
        if time.monotonic() < self.retry_at:
            return 0
        try:
            moved = self.step()
        except Exception as exc:
            self._failed(exc)
            return 0
        self.failures = 0
        return moved

    def _failed(self, exc: Exception) -> float:
        self.failures += 1
        delay = backoff(self.failures, self.retry_max)
        self.retry_at = time.monotonic() + delay
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(
            level,
            "event broker %s unavailable (%s); %d events wait in the outbox, retry %d in %.1f s",
            self.broker.kind,
            exc,
            self._backlog(),
            self.failures,
            delay,
        )
        return delay

    def _backlog(self) -> int:
        try:
            return self.outbox.backlog()
        except Exception:
            return -1

    def update_gauges(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._gauges_at < GAUGE_EVERY:
            return
        self._gauges_at = now
        try:
            metrics.OUTBOX_BACKLOG.set(self.outbox.backlog())
            metrics.OUTBOX_OLDEST_AGE.set(self.outbox.oldest_age() or 0.0)
        except Exception:
            log.debug("cannot measure the outbox", exc_info=True)

    # --- loops -------------------------------------------------------------------------

    def drain(self, timeout: float) -> int:
        """Relay until the outbox is empty or ``timeout`` passed; returns the backlog left.

        Takes the lease first (waiting while another relay holds it), so a drain never
        interleaves with a running relay.
        """
        deadline = time.monotonic() + timeout
        while not self.lease.acquire():
            if time.monotonic() > deadline:
                return self._backlog()
            time.sleep(min(0.5, self.lease_ttl / 6))
        try:
            return self._drain_until(deadline)
        finally:
            self.lease.release()

    def _drain_until(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            try:
                if self.step() == 0 and self.outbox.backlog() == 0:
                    return 0
                self.failures = 0
            except BrokerUnavailableError as exc:
                time.sleep(min(self._failed(exc), max(0.0, deadline - time.monotonic())))
        return self._backlog()

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set: hold the lease or stand by, back off on failures."""
        log.info("outbox relay started (broker %s)", self.broker.describe())
        try:
            while not stop.is_set():
                try:
                    self._round(stop)
                except Exception as exc:  # Redis (the outbox) down, or a bug: keep going
                    if not isinstance(exc, BrokerUnavailableError):
                        log.warning("outbox relay: %r", exc, exc_info=True)
                    stop.wait(self._failed(exc))
        finally:
            self.lease.release()
            self.broker.disconnect_sync()
            log.info("outbox relay stopped after relaying %d events", self.relayed)

    def _leader(self) -> bool:
        """Hold the lease: take it when free, renew it a third of its time after the last."""
        now = time.monotonic()
        if not self.lease.held:
            if self.lease.acquire():
                self._renewed_at = now
            return self.lease.held
        if now - self._renewed_at >= self.lease_ttl / 3:
            self.lease.renew()
            self._renewed_at = now
        return self.lease.held

    def _round(self, stop: threading.Event) -> None:
        self.update_gauges()
        if not self._leader():
            stop.wait(self.lease_ttl / 3)
            return
        wait = self.retry_at - time.monotonic()
        if wait > 0:  # backing off: keep the lease alive meanwhile
            stop.wait(min(wait, self.lease_ttl / 3))
            return
        try:
            moved = self.step()
        except BrokerUnavailableError as exc:
            self._failed(exc)
            return
        if self.failures:
            log.info("event broker %s is back; relaying the outbox", self.broker.kind)
        self.failures = 0
        if moved == 0:
            self.update_gauges(force=True)
            self.outbox.wait(self._last_id, IDLE_WAIT)
        elif moved < self.batch:
            stop.wait(LINGER)  # a trickle: let a few more events gather per round trip
