"""Running event handlers (``crd events handle``): at least once in, once per event out.

Each handler runs in its own thread as its own consumer group, ``<group>.<handler>``, on
the configured broker (``EventBroker.consume_sync``: verified events, acknowledged only
after the handler finished with them), so a slow or failing handler never holds up
another one. For each event:

1. claim it (``redundancy.events.claims``): handled or dead-lettered already -> skip;
   another process runs it -> wait for that outcome (or for its lease to run out);
2. run the handler, renewing the lease while it runs;
3. it returned -> ``done``; it raised -> try again after the project's back-off
   (``redundancy.retry.handler_retry``), up to the handler's tries, then dead-letter it
   (at once for an ``InvalidInputError``: the event can never succeed);
4. acknowledge.

Processes of one group share the work; the claim makes an event that reaches two of
them (published twice, redelivered after a crash) run once. A process killed mid-handler
leaves its message unacknowledged: the broker hands it out again (on Redis Streams to
the same ``--consumer`` name at once, to another member after 60 s idle) and the next
claim runs it once the dead one's lease has run out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from redundancy.errors import ConfigurationError, InvalidInputError
from redundancy.events import metrics
from redundancy.events.brokers.base import EventBroker
from redundancy.events.claims import HandlerState, claim_key, dead_letter_fields
from redundancy.events.handlers import Handler
from redundancy.events.models import DomainEvent
from redundancy.retry import FIRST_DELAY, RetryPolicy, handler_retry

log = logging.getLogger(__name__)

DEFAULT_GROUP = "crd-handlers"
BUSY_POLL = RetryPolicy(first=0.05, cap=1.0)
"""How often a process re-reads a claim another process holds."""
RESTART = RetryPolicy(first=FIRST_DELAY, cap=30.0)
"""Back-off before a handler's consumer starts again after an infrastructure error."""


class Interrupted(Exception):
    """Stop was asked while an event waited: it stays unacknowledged (it comes back)."""


@dataclass
class Outcomes:
    """What a run did, per handler and outcome (``handled``, ``retried``,
    ``dead_lettered``, ``duplicate``)."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, handler: str, outcome: str) -> int:
        """Count one; returns the events finished so far, over all handlers."""
        metrics.HANDLER_OUTCOMES.labels(handler, outcome).inc()
        with self._lock:
            mine = self.counts.setdefault(handler, {})
            mine[outcome] = mine.get(outcome, 0) + 1
            return sum(n for c in self.counts.values() for o, n in c.items() if o != "retried")


class HandlerRunner:
    """Runs ``handlers`` against brokers made by ``broker_factory`` (one per handler)."""

    def __init__(
        self,
        handlers: Sequence[Handler],
        broker_factory: Callable[[], EventBroker],
        state: HandlerState,
        *,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        verify: bool = True,
        max_tries: int | None = None,
        lease: float | None = None,
    ) -> None:
        from redundancy.config import get_settings

        settings = get_settings()
        self.handlers = list(handlers)
        self.broker_factory = broker_factory
        self.state = state
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.verify = verify
        self.max_tries = max_tries or settings.events_handler_max_tries
        self.lease = lease or settings.events_handler_lease
        self.outcomes = Outcomes()
        self.stop = threading.Event()
        self._max_events: int | None = None
        self._renewers: dict[str, _Renewer] = {}
        self._renewers_lock = threading.Lock()

    def _renewer(self, spec: Handler) -> _Renewer:
        with self._renewers_lock:
            found = self._renewers.get(spec.name)
            if found is None:
                found = self._renewers[spec.name] = _Renewer(self.state, self.lease)
            return found

    def consumer_group(self, spec: Handler) -> str:
        """The broker's consumer group of one handler."""
        return f"{self.group}.{spec.name}"

    def run(self, *, max_events: int | None = None, timeout: float | None = None) -> Outcomes:
        """Run every handler until ``stop`` is set, ``max_events`` events are finished
        (over all handlers), or each handler saw no event for ``timeout`` seconds."""
        self._max_events = max_events
        threads = [
            threading.Thread(
                target=self._loop, args=(spec, timeout), name=f"handler-{spec.name}", daemon=True
            )
            for spec in self.handlers
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.5)
        except KeyboardInterrupt:
            self.stop.set()
            for thread in threads:
                thread.join()
        return self.outcomes

    def _loop(self, spec: Handler, timeout: float | None) -> None:
        try:
            self._consume(spec, timeout)
        finally:
            self._renewer(spec).close()

    def _consume(self, spec: Handler, timeout: float | None) -> None:
        failures = 0
        while not self.stop.is_set():
            broker = self.broker_factory()
            try:
                broker.consume_sync(
                    lambda event: self.handle(spec, event),
                    group=self.consumer_group(spec),
                    event_types=spec.event_types,
                    timeout=timeout,
                    verify=self.verify,
                    consumer=self.consumer,
                    stop=self.stop,
                )
                return  # idle for ``timeout`` or stopped
            except Interrupted:
                return
            except ConfigurationError as exc:  # nothing a retry can mend: stop everything
                log.error("handler %s: %s", spec.name, exc)
                self.outcomes.errors.append(exc)
                self.stop.set()
                return
            except Exception as exc:  # the broker or Redis: start again after a back-off
                failures += 1
                delay = RESTART.delay(failures)
                log.warning(
                    "handler %s: consumer stopped (%s: %s); again in %.1f s",
                    spec.name, type(exc).__name__, exc, delay,
                )  # fmt: skip
                self.stop.wait(delay)
            finally:
                broker.disconnect_sync()

    # --- one event ------------------------------------------------------------------

    def handle(self, spec: Handler, event: DomainEvent) -> None:
        """Claim, run and finish one event for one handler (the module docstring);
        returns when the event may be acknowledged."""
        if self.stop.is_set():  # the rest of a fetched batch waits for the next run
            raise Interrupted
        key = claim_key(self.group, spec.name, str(event.event_id))
        owner = f"{self.consumer}/{uuid.uuid4().hex[:12]}"
        tries = spec.tries or self.max_tries
        policy = handler_retry(tries)
        polls = 0
        while True:
            claim = self.state.claim(key, owner, self.lease)
            if claim.status in ("done", "dead"):
                self._finished(spec, "duplicate")
                return
            if claim.status == "busy":  # another process runs it: wait for its outcome
                polls += 1
                self._pause(min(claim.wait, BUSY_POLL.delay(polls)) + 0.01)
                continue
            if claim.tries > tries:  # earlier tries died with their process
                error = f"{claim.tries - 1} tries ended without an outcome (process killed?)"
                self._dead_letter(spec, event, key, error, claim.tries - 1)
                return
            try:
                with self._renewer(spec).holding(key, owner):
                    spec(event)
            except Exception as exc:
                error = "".join(traceback.format_exception_only(exc)).strip()
                if isinstance(exc, InvalidInputError) or not policy.retries_after(claim.tries):
                    log.error(
                        "handler %s gave up on event %s (%s) after %d tries: %s",
                        spec.name, event.event_id, event.event_type, claim.tries, error,
                    )  # fmt: skip
                    self._dead_letter(spec, event, key, error, claim.tries)
                    return
                self.state.failed(key, owner, error)
                delay = policy.delay(claim.tries)
                log.warning(
                    "handler %s: event %s try %d of %d failed (%s); again in %.1f s",
                    spec.name, event.event_id, claim.tries, tries, error, delay,
                )  # fmt: skip
                self.outcomes.add(spec.name, "retried")
                self._pause(delay)
                continue
            self.state.done(key)
            self._finished(spec, "handled")
            return

    def _dead_letter(
        self, spec: Handler, event: DomainEvent, key: str, error: str, tries: int
    ) -> None:
        letter = dead_letter_fields(
            event_id=str(event.event_id),
            event_type=event.event_type,
            handler=spec.name,
            group=self.group,
            error=error,
            tries=tries,
            envelope=event.model_dump_json(),
        )
        self.state.dead(key, letter)
        self._finished(spec, "dead_lettered")

    def _finished(self, spec: Handler, outcome: str) -> None:
        total = self.outcomes.add(spec.name, outcome)
        if self._max_events is not None and total >= self._max_events:
            self.stop.set()

    def _pause(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Interrupted


class _Renewer:
    """One thread per handler that renews, every third of the lease, the claim its
    handler is running (a thread per event would cost more than the claim itself)."""

    def __init__(self, state: HandlerState, lease: float) -> None:
        self.state, self.lease = state, lease
        self._current: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def holding(self, key: str, owner: str) -> Iterator[None]:
        with self._lock:
            self._current = (key, owner)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._current = None

    def _run(self) -> None:
        # A claim taken just after a wake-up is renewed at the next one, within lease/3.
        while not self._closed.wait(self.lease / 3):
            with self._lock:
                current = self._current
            if current is None:
                continue
            try:
                self.state.renew(*current, self.lease)
            except Exception:  # a Redis blip: the next renewal may work
                log.warning("lease renewal of %s failed", current[0], exc_info=True)

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
