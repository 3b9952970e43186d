"""The relay: moves events from the outbox to the event broker, oldest first.

One relay at a time holds the lease and drains the outbox in order, so events of an
aggregate reach the broker in the order their jobs finished; others wait as standbys
and take over within the lease time when it dies. An entry leaves the outbox only after
the broker confirmed it: a relay killed mid-batch makes the next one publish that batch
again (duplicates carry the same ``event_id``). While the broker is down the relay backs
off exponentially with jitter and nothing is skipped. Entries no retry can publish
(unreadable, or refused for good) go to a dead-letter stream and are counted.

On a broker that confirms asynchronously (Kafka) up to EVENTS_RELAY_WINDOW batches are
in flight at once; only the oldest contiguous confirmed ones leave the outbox, and a
failure anywhere in the window makes the relay wait for all its reports and send again
from the oldest unconfirmed entry, in order (``_window_failed`` says why order holds).

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
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from redundancy.errors import ConfigurationError
from redundancy.events import metrics
from redundancy.events.brokers.base import EventBroker, Sending
from redundancy.events.errors import BrokerUnavailableError, InvalidEventError, PublishRejectedError
from redundancy.events.outbox import Entry, Outbox
from redundancy.events.wire import WireMessage
from redundancy.kv.lease import Lease
from redundancy.retry import RetryPolicy, relay_retry

MODULE = "redundancy.events.relay"
"""``python -m`` this to run a relay (what a worker spawns)."""

log = logging.getLogger(MODULE)  # not __name__, which is "__main__" under python -m
GAUGE_EVERY = 1.0
REPORT_WAIT = 0.05
"""Longest wait for one delivery report before looking at the window again."""
IDLE_WAIT = 0.5
"""Longest wait for new outbox entries (also how long a stopping relay may take)."""
LINGER = 0.1
"""Pause after a partial batch, so a trickle of events is relayed many at a time: each
batch costs the relay a few round trips, whatever its size (0.02 s cost ~0.5 ms of CPU
per event at 60 tasks/s; events wait at most this much longer)."""


@dataclass
class _Batch:
    """Outbox entries handed to the broker together, in outbox order."""

    messages: list[tuple[str, WireMessage, dict[Any, Any]]]
    sending: Sending
    sent_at: float
    """When it was handed over (its reports come within the publish timeout of it)."""


class Relay:
    def __init__(
        self,
        outbox: Outbox,
        broker: EventBroker,
        *,
        batch: int | None = None,
        retry_max: float | None = None,
        lease_ttl: float | None = None,
        window: int | None = None,
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
        self.window = (window or s.events_relay_window) if broker.confirms_async else 1
        self._window: deque[_Batch] = deque()
        self._reader: ThreadPoolExecutor | None = None
        self._read_ahead: tuple[str, Future[list[Entry]]] | None = None

    # --- one step ----------------------------------------------------------------------

    def step(self) -> int:
        """Relay: hand batches over up to the window, and remove the confirmed ones; returns
        how many left the outbox (0 while the oldest batch in flight waits for the broker).

        Raises BrokerUnavailableError when the broker failed a batch: what it confirmed
        before that batch is removed, the rest stays and is sent again from there.
        """
        try:
            moved = self._settle()
            self._fill()
            if not moved and self._window:
                moved = self._settle(wait=True)
        except BrokerUnavailableError:
            raise  # _window_failed settled the window
        except Exception:
            self._abandon_window()  # e.g. the outbox unreachable: start again from its head
            raise
        return moved

    @property
    def in_flight(self) -> int:
        """Events handed to the broker and not yet confirmed (nor removed)."""
        return sum(len(b.messages) for b in self._window)

    def _fill(self) -> None:
        """Read the batches after the window and hand them over until it is full: up to
        ``window`` batches at a time on a broker that confirms asynchronously (Kafka), one
        otherwise (then the send waits for the broker, as ``send_sync``)."""
        while len(self._window) < self.window:
            after = self._window[-1].messages[-1][0] if self._window else None
            entries = self._read(after)
            messages: list[tuple[str, WireMessage, dict[Any, Any]]] = []
            for entry_id, fields in entries:
                try:
                    messages.append((entry_id, WireMessage.from_fields(fields), fields))
                except InvalidEventError as exc:
                    self._dead_letter(entry_id, fields, f"unreadable: {exc}")
            if not messages:
                if len(entries) == self.batch:
                    continue  # a whole batch of unreadable entries, gone: read on
                return
            if not self._renew_before_publishing():
                self._abandon_window()
                return
            full = len(entries) == self.batch
            if full and len(self._window) + 1 == self.window:
                self._read_next(entries[-1][0])  # while the broker works, before a wait
            sending = self.broker.send_async([m for _, m, _ in messages])
            self._window.append(_Batch(messages, sending, time.monotonic()))
            if not full:
                return  # the outbox's tail: wait for more with the next step

    def _settle(self, wait: bool = False) -> int:
        """Remove the oldest batches the broker confirmed (one ``XTRIM MINID`` through the
        last of them: the window starts at the outbox's head); with ``wait``, first wait
        for the oldest one's reports. A failed batch anywhere in the window: see
        ``_window_failed``.

        The wait ends by the oldest batch's publish deadline (EVENTS_PUBLISH_TIMEOUT + 1
        after it was handed over): the lease, renewed before that batch was, outlives it
        (see ``_renew_before_publishing``), and every later batch had its own renewal."""
        if not self._window:
            return 0
        oldest = self._window[0]
        deadline = oldest.sent_at + self.broker.publish_timeout + 1.0
        while True:
            self.broker.poll_sync(REPORT_WAIT if wait else 0)
            if any(b.sending.error is not None for b in self._window):
                return self._window_failed()
            if not wait or oldest.sending.settled:
                break
            if time.monotonic() > deadline:  # reports are bounded by the publish timeout
                return self._window_failed()
        return self._remove_confirmed()

    def _remove_confirmed(self) -> int:
        done = 0
        while done < len(self._window) and self._window[done].sending.confirmed:
            done += 1
        if not done:
            return 0
        through = self._window[done - 1].messages[-1][0]
        self.outbox.remove_through(through)
        moved = sum(len(self._window.popleft().messages) for _ in range(done))
        self._last_id = through
        self.relayed += moved
        return moved

    def _window_failed(self) -> int:
        """A batch of the window failed: wait for every report of the window, remove the
        confirmed prefix, then drop the rest so it is read and sent again, in order, from
        its oldest entry. A refused batch goes one by one (dead-lettering what the broker
        refuses for good); any other failure is raised, to back off.

        Why order per aggregate holds: every batch of the window was handed over in outbox
        order and nothing is re-sent before the whole window settled, so the copies the
        broker may still write of a failed batch all land before the re-sent ones; the last
        copy of each event is then in the outbox's order (duplicates carry the same
        ``event_id``), as with one failed batch sent again whole."""
        self.broker.flush_sync()
        for batch in self._window:  # reports the flush could not get are failures
            if not batch.sending.settled:
                batch.sending.give_up(BrokerUnavailableError("no delivery report in time"))
        moved = self._remove_confirmed()
        failed = self._window.popleft()
        self._window.clear()
        self._read_ahead = None
        error = failed.sending.error
        if isinstance(error, PublishRejectedError):
            return moved + self._one_by_one(failed.messages)
        if isinstance(error, BrokerUnavailableError):
            self.broker.disconnect_sync()  # a fresh connection for the retry
        raise error or BrokerUnavailableError("the broker did not confirm a batch")

    def _abandon_window(self) -> None:
        """The lease is lost: stop sending, wait for what is in flight, remove nothing (the
        next relay sends it again)."""
        if self._window:
            self.broker.flush_sync()
            self._window.clear()
        self._read_ahead = None

    def _finish_window(self) -> None:
        """Stopping while holding the lease: keep what the broker confirms by then."""
        if not self._window:
            return
        try:
            self.broker.flush_sync()
            self._remove_confirmed()
        except Exception:
            log.debug("settling the relay's last batches failed", exc_info=True)
        self._window.clear()

    def _read(self, after: str | None) -> list[Entry]:
        """The batch after entry ``after`` (the outbox's head when None): the one read
        ahead during the last send when it starts there (at the head: after the batch
        removed last), else read now."""
        ahead, self._read_ahead = self._read_ahead, None
        if ahead is not None and ahead[0] == (after or self._last_id):
            try:
                return ahead[1].result()
            except Exception:
                log.debug("reading ahead failed; reading the outbox again", exc_info=True)
        return self.outbox.peek(self.batch, after)

    def _read_next(self, after: str) -> None:
        """Read the batch after ``after`` in a thread, overlapping the broker's work
        (a durable outbox only: the embedded default's is in memory)."""
        if not self.outbox.durable:
            return
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="crd-relay-read")
        self._read_ahead = (after, self._reader.submit(self.outbox.peek, self.batch, after))

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
            self._finish_window()
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
            self._finish_window()
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
            self._abandon_window()
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
        if self._window:
            return  # batches in flight: settle them first
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
