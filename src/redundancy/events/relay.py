"""The relay: moves events from the outbox to the event broker, oldest first.

One relay at a time holds the lease and drains the outbox in order, so events of an
aggregate reach the broker in the order their jobs finished; others wait as standbys
and take over within the lease time when it dies. An entry leaves the outbox only after
the broker confirmed it: a relay killed mid-batch makes the next one publish that batch
again (duplicates carry the same ``event_id``). While the broker is down the relay backs
off exponentially with jitter and nothing is skipped. Entries no retry can publish
(unreadable, or refused for good) go to a dead-letter stream and are counted.

Run it as ``python -m redundancy.events.relay [--drain]`` (``crd events relay`` is the
same code). Every worker starts one beside it, as a child process of its main process
(``start_beside_worker``, on ``worker_ready``; EVENTS_RELAY_IN_WORKER); any number may
run, one works. The embedded default relays inline instead (``redundancy.events.emitter``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from redundancy.errors import ConfigurationError
from redundancy.events import metrics
from redundancy.events.brokers.base import EventBroker
from redundancy.events.errors import BrokerUnavailableError, InvalidEventError, PublishRejectedError
from redundancy.events.outbox import Entry, Outbox
from redundancy.events.wire import WireMessage
from redundancy.kv.lease import Lease
from redundancy.retry import RetryPolicy, relay_retry

MODULE = "redundancy.events.relay"
"""``python -m`` this to run a relay (what a worker spawns)."""

log = logging.getLogger(MODULE)  # not __name__, which is "__main__" under python -m
GAUGE_EVERY = 1.0
IDLE_WAIT = 0.5
"""Longest wait for new outbox entries (also how long a stopping relay may take)."""
LINGER = 0.1
"""Pause after a partial batch, so a trickle of events is relayed many at a time: each
batch costs the relay a few round trips, whatever its size (0.02 s cost ~0.5 ms of CPU
per event at 60 tasks/s; events wait at most this much longer)."""


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
        self.retry = RetryPolicy(cap=retry_max) if retry_max else relay_retry(s)
        self.lease_ttl = lease_ttl or s.events_relay_lease_ttl
        self.lease: Lease = outbox.lease(self.lease_ttl)
        self.failures = 0
        self.retry_at = 0.0
        self.relayed = 0
        self._last_id: str | None = None
        self._gauges_at = 0.0
        self._renewed_at = 0.0
        # A renewal keeps the lease for its whole TTL; one less than half a TTL old (less
        # a publish) outlives any publish started now, so renewing again is not needed.
        self._renew_every = max(0.0, self.lease_ttl / 2 - (broker.publish_timeout + 1))
        self._fresh_until = 0.0
        self._reader: ThreadPoolExecutor | None = None
        self._read_ahead: Future[list[Entry]] | None = None

    # --- one step ----------------------------------------------------------------------

    def step(self) -> int:
        """Relay up to one batch; returns how many left the outbox.

        Raises BrokerUnavailableError (nothing removed) when the broker is down.
        """
        entries = self._head()
        messages: list[tuple[str, WireMessage, dict[Any, Any]]] = []
        for entry_id, fields in entries:
            try:
                messages.append((entry_id, WireMessage.from_fields(fields), fields))
            except InvalidEventError as exc:
                self._dead_letter(entry_id, fields, f"unreadable: {exc}")
        if not messages or not self._renew_before_publishing():
            return 0
        if len(entries) == self.batch:
            self._read_next(entries[-1][0])  # while the broker confirms this batch
        try:
            self.broker.send_sync([m for _, m, _ in messages])
        except PublishRejectedError:
            self._read_ahead = None
            return self._one_by_one(messages)
        except BaseException:
            self._read_ahead = None  # the batch stays at the head: read it again
            raise
        self.outbox.remove_through(messages[-1][0])  # the batch was the outbox's head
        self._last_id = messages[-1][0]
        self.relayed += len(messages)
        return len(messages)

    def _head(self) -> list[Entry]:
        """The outbox's oldest batch: the one read ahead during the last publish (then the
        head, as its predecessor is gone), else read now."""
        ahead, self._read_ahead = self._read_ahead, None
        if ahead is not None:
            try:
                return ahead.result()
            except Exception:
                log.debug("reading ahead failed; reading the outbox again", exc_info=True)
        return self.outbox.peek(self.batch)

    def _read_next(self, after: str) -> None:
        """Read the batch after ``after`` in a thread, overlapping the broker's confirms
        (a durable outbox only: the embedded default's is in memory)."""
        if not self.outbox.durable:
            return
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="crd-relay-read")
        self._read_ahead = self._reader.submit(self.outbox.peek, self.batch, after)

    def _stop_reading(self) -> None:
        self._read_ahead = None
        if self._reader is not None:
            self._reader.shutdown(wait=False)
            self._reader = None

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
        this relay may still be publishing, which would break the order per aggregate.
        A renewal young enough (``_renew_every``) already does, and saves a round trip."""
        if time.monotonic() < self._fresh_until:
            return True
        if not self.lease.renew():
            self._fresh_until = 0.0
            log.warning("outbox relay lost its lease; another relay continues")
            return False
        self._held_since(time.monotonic())
        return True

    def _held_since(self, renewed: float) -> None:
        """The lease was taken or renewed at ``renewed`` (just before the round trip)."""
        self._renewed_at = renewed
        self._fresh_until = renewed + self._renew_every

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
        delay = self.retry.delay(self.failures)
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
            self._stop_reading()
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
            self._stop_reading()
            self.lease.release()
            self.broker.disconnect_sync()
            log.info("outbox relay stopped after relaying %d events", self.relayed)

    def _leader(self) -> bool:
        """Hold the lease: take it when free, renew it a third of its time after the last."""
        now = time.monotonic()
        if not self.lease.held:
            if self.lease.acquire():
                self._held_since(now)
            return self.lease.held
        if now - self._renewed_at >= self.lease_ttl / 3:
            if self.lease.renew():
                self._held_since(now)
            else:
                self._fresh_until = 0.0
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


# --- running one: the command line, and beside a worker --------------------------------------


def serve(*, drain: bool = False, timeout: float = 60.0, parent: int | None = None) -> int:
    """Relay this deployment's outbox until SIGINT/SIGTERM (or, with ``parent``, until that
    process is gone); with ``drain``, relay what waits and return the backlog left."""
    from redundancy.config import get_settings
    from redundancy.events.brokers import broker_from_settings
    from redundancy.events.outbox import get_outbox
    from redundancy.observability.logs import configure_logging

    settings = get_settings()
    settings.require_broker("the embedded default relays inline, there is no outbox to relay")
    configure_logging(settings.log_format, logging.INFO)  # a worker's relay logs like it
    relay = Relay(get_outbox(), broker_from_settings())
    if drain:
        left = relay.drain(timeout)
        relay.broker.disconnect_sync()
        print(json.dumps({"relayed": relay.relayed, "backlog": left}), flush=True)
        return left
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if parent is not None:
        _watch_parent(parent, stop)
    relay.run(stop)
    return 0


def _watch_parent(parent: int, stop: threading.Event) -> None:
    """Stop when ``parent`` (the worker that started us) is gone: we were re-parented."""

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch, name="crd-relay-parent-watch", daemon=True).start()


_beside_worker: subprocess.Popen[bytes] | None = None


def start_beside_worker() -> None:
    """Start ``python -m redundancy.events.relay`` as a child of the worker's main process.

    A process, not a thread: a thread in the prefork parent could hold a lock (a metric's,
    a client's) at the moment the pool forks a replacement child, which would then hang;
    and the relay's work never competes with the parent's dispatching for the GIL. It
    exits with the worker (SIGTERM on shutdown, or when it sees its parent gone).
    """
    global _beside_worker
    from redundancy.config import get_settings

    s = get_settings()
    if not (s.events_enabled and s.events_relay_in_worker) or s.embedded:
        return
    try:
        _beside_worker = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--parent", str(os.getpid())]
        )
    except Exception:
        log.exception("the outbox relay could not start; events wait in the outbox")


def stop_beside_worker() -> None:
    global _beside_worker
    proc, _beside_worker = _beside_worker, None
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description="Relay the outbox to the event broker."
    )
    parser.add_argument("--drain", action="store_true", help="relay what waits, then exit")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="with --drain: give up after N seconds"
    )
    parser.add_argument("--parent", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        left = serve(drain=args.drain, timeout=args.timeout, parent=args.parent)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if left == 0 else 1)


if __name__ == "__main__":
    main()
