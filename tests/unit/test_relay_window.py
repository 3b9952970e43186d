"""The relay's window of batches in flight (brokers that confirm asynchronously, as Kafka):
a batch that fails in the middle of the window loses nothing, leaves in the outbox all
that was not confirmed, and the last copy of each event is in outbox order."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict, deque

import pytest

from redundancy.events import AnalysisCompletedEvent, InMemoryBroker, WireMessage
from redundancy.events.errors import BrokerUnavailableError, PublishRejectedError
from redundancy.events.outbox import MemoryOutbox
from redundancy.events.relay import Relay


class WindowBroker(InMemoryBroker):
    """Confirms asynchronously, like Kafka: batches are written in the order handed over,
    their reports come with later polls, one batch per poll in a random order (a later
    batch may be confirmed before an older one), a failure first. Batches numbered in
    ``fail`` (in the order handed over) get half written, then their reports fail; an
    event id in ``refused`` is refused for good. A disconnect abandons what is in flight: those
    reports never come, and what was not written yet lands late, after the next write."""

    confirms_async = True

    def __init__(self, fail=(), refused=None, seed=3):
        super().__init__(f"memory://{uuid.uuid4().hex}")
        self.fail = set(fail)
        self.refused = refused
        self.handed = 0
        self.most_in_flight = 0
        self.waiting: list = []  # [sending, messages or None once written, error]
        self.late: list = []
        self.random = random.Random(seed)

    def _send(self, messages):  # send_sync: one by one after a refusal
        if any(m.event_id == self.refused for m in messages):
            raise PublishRejectedError("too large")
        super()._send(messages)

    def _send_async(self, messages, sending):
        number, self.handed = self.handed, self.handed + 1
        error = None
        if number in self.fail:
            messages, error = messages[: len(messages) // 2], BrokerUnavailableError("injected")
        elif any(m.event_id == self.refused for m in messages):
            messages, error = [], PublishRejectedError("too large")
        self.waiting.append([sending, messages, error])
        self.most_in_flight = max(self.most_in_flight, len(self.waiting))

    def _poll(self, timeout):
        if not self.waiting:
            return
        failing = [i for i, entry in enumerate(self.waiting) if entry[2] is not None]
        k = failing[0] if failing else self.random.randrange(len(self.waiting))
        for entry in self.waiting[: k + 1]:  # in order: a batch lands after those before it
            if entry[1] is not None:
                InMemoryBroker._send(self, entry[1])
                entry[1] = None
        for messages in self.late:
            InMemoryBroker._send(self, messages)
        self.late.clear()
        sending, _, error = self.waiting.pop(k)
        sending.report(error, sending.unconfirmed)

    def _flush(self):
        while self.waiting:
            self._poll(0)

    def _disconnect(self):
        self.late += [messages for _, messages, _ in self.waiting if messages is not None]
        for sending, _, _ in self.waiting:
            sending.give_up(BrokerUnavailableError("disconnected"))
        self.waiting.clear()


def fill(outbox, count, aggregates=7):
    ids = []
    for i in range(count):
        event = AnalysisCompletedEvent(
            content_hash=f"h{i % aggregates}", redundancy_score=0, analysis_result={"n": i}
        )
        outbox.append(WireMessage.of(event))
        ids.append(str(event.event_id))
    return ids


def outbox_ids(outbox):
    return [WireMessage.from_fields(fields).event_id for _, fields in outbox.peek(100_000)]


def assert_last_copies_in_outbox_order(messages, written):
    """For each aggregate, its events' last copies on the broker follow the outbox order."""
    last = {m.event_id: i for i, m in enumerate(messages)}
    per_aggregate = defaultdict(list)
    for m in messages:
        if m.event_id not in per_aggregate[m.key]:
            per_aggregate[m.key].append(m.event_id)
    order = {event_id: i for i, event_id in enumerate(written)}
    for key, ids in per_aggregate.items():
        by_last_copy = sorted(ids, key=last.__getitem__)
        assert by_last_copy == sorted(ids, key=order.__getitem__), key


def test_a_batch_failing_mid_window_loses_nothing_and_keeps_the_order():
    # Given 2,000 events, a relay keeping 4 batches of 100 in flight, and a broker that
    # half-writes the 3rd batch and fails its reports (the others may confirm before it)
    outbox = MemoryOutbox()
    written = fill(outbox, 2000)
    broker = WindowBroker(fail={2})
    relay = Relay(outbox, broker, batch=100, window=4, retry_max=0.05)
    assert relay.lease.acquire()
    # When the relay steps into the failure
    with pytest.raises(BrokerUnavailableError, match="injected"):
        for _ in range(10):
            relay.step()
    # Then several batches were in flight, and the outbox keeps everything not confirmed:
    # the failed batch and all after it (the 4th was confirmed, but follows the failed one)
    assert broker.most_in_flight >= 3
    assert outbox_ids(outbox) == written[200:]
    assert relay.in_flight == 0
    # and once drained, nothing is lost and the last copies are in outbox order
    relay.lease.release()
    assert relay.drain(timeout=30) == 0
    delivered = [m.event_id for m in broker.messages]
    assert set(delivered) == set(written)
    assert_last_copies_in_outbox_order(broker.messages, written)
    assert list(dict.fromkeys(reversed(delivered)))[::-1] == written


@pytest.mark.parametrize("seed", range(5))
def test_repeated_failures_in_the_window_keep_the_order(seed):
    # Given batches failing here and there, reports arriving in a random order
    outbox = MemoryOutbox()
    written = fill(outbox, 1500, aggregates=3)
    broker = WindowBroker(fail={1, 4, 5, 9, 13}, seed=seed)
    relay = Relay(outbox, broker, batch=50, window=5, retry_max=0.01)
    # When the relay drains through them
    assert relay.drain(timeout=30) == 0
    # Then every event arrived and each aggregate's last copies are in outbox order
    assert set(m.event_id for m in broker.messages) == set(written)
    assert_last_copies_in_outbox_order(broker.messages, written)


def test_a_refused_event_in_the_window_is_dead_lettered_and_the_rest_keeps_its_order():
    # Given an event the broker refuses for good, in the 2nd batch of a window of 4
    outbox = MemoryOutbox()
    written = fill(outbox, 1000)
    broker = WindowBroker(refused=written[150])
    relay = Relay(outbox, broker, batch=100, window=4)
    # When the relay drains
    assert relay.drain(timeout=30) == 0
    # Then only that event went to the dead letters; the rest arrived, in order
    assert outbox.dead_letters() == 1
    kept = [i for i in written if i != written[150]]
    assert set(m.event_id for m in broker.messages) == set(kept)
    assert_last_copies_in_outbox_order(broker.messages, kept)


def test_a_broker_that_confirms_synchronously_gets_one_batch_at_a_time():
    # (Redis Streams, RabbitMQ and the in-memory broker: send_async is send_sync)
    relay = Relay(MemoryOutbox(), InMemoryBroker(f"memory://{uuid.uuid4().hex}"), window=4)
    assert relay.window == 1
    assert Relay(MemoryOutbox(), WindowBroker(), window=4).window == 4


def test_a_relay_that_lost_its_lease_sends_no_more_and_removes_nothing():
    class LeaseLostAfterOneRenewal:
        renewals = 0

        def acquire(self):
            return True

        def renew(self):
            self.renewals += 1
            return self.renewals == 1

        def release(self):
            pass

    outbox = MemoryOutbox()
    fill(outbox, 1000)
    broker = WindowBroker()
    relay = Relay(outbox, broker, batch=100, window=4, lease_ttl=40)
    relay._renew_every = 0  # renew before every batch: the second renewal fails
    relay.lease = LeaseLostAfterOneRenewal()
    assert relay.step() == 0
    # one batch was handed over before the lease was lost; it settled, nothing removed
    assert broker.handed == 1 and not broker.waiting and relay.in_flight == 0
    assert outbox.backlog() == 1000


def test_reports_are_awaited_for_the_oldest_batch_only():
    # Given a window of 3 with reports that arrive one batch per poll
    outbox = MemoryOutbox()
    written = fill(outbox, 1000)
    broker = WindowBroker(seed=1)
    relay = Relay(outbox, broker, batch=100, window=3)
    assert relay.lease.acquire()
    moved = relay.step()
    # Then a step removes the confirmed prefix, whatever came after it
    assert moved % 100 == 0 and moved > 0
    assert outbox_ids(outbox) == written[moved:]
    assert 0 < relay.in_flight <= 300
    deque(iter(relay.step, 0), maxlen=0)  # the rest
    assert outbox.backlog() == 0
