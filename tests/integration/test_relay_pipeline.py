"""The relay on a real Redis outbox: it reads the next batch while the broker confirms
the current one, removes a confirmed batch in one trim, and renews its lease only when
a publish could outlive the last renewal -- with the order and the at-least-once
guarantee of the outbox unchanged."""

from __future__ import annotations

import uuid

import pytest
import redis

from redundancy.events import AnalysisCompletedEvent, InMemoryBroker
from redundancy.events.errors import BrokerUnavailableError
from redundancy.events.outbox import RedisOutbox
from redundancy.events.relay import Relay
from redundancy.events.wire import WireMessage
from tests.services import REDIS_BACKEND_DB, flush_db, redis_url

pytestmark = pytest.mark.integration


class FlakyBroker(InMemoryBroker):
    """Fails the ``fail_on``-th publish (1-based) as an outage, then works again."""

    fail_on = 0
    sends = 0

    def _send(self, messages):
        self.sends += 1
        if self.sends == self.fail_on:
            raise BrokerUnavailableError("down for one publish")
        super()._send(messages)


class CountingLease:
    def __init__(self) -> None:
        self.renewals = 0
        self.held = True

    def acquire(self) -> bool:
        return True

    def renew(self) -> bool:
        self.renewals += 1
        return True

    def release(self) -> None:
        pass


@pytest.fixture
def outbox(redis_server) -> RedisOutbox:
    url = redis_url(REDIS_BACKEND_DB)
    flush_db(url)
    return RedisOutbox(client=redis.Redis.from_url(url))


def fill(outbox: RedisOutbox, count: int) -> list[str]:
    ids = []
    for i in range(count):
        event = AnalysisCompletedEvent(
            content_hash=f"h{i % 7}", redundancy_score=0, analysis_result={"n": i}
        )
        outbox.append(WireMessage.of(event))
        ids.append(str(event.event_id))
    return ids


def test_full_batches_are_read_ahead_and_trimmed_in_order(outbox):
    # Given 1,050 events and a relay taking 100 at a time
    written = fill(outbox, 1050)
    broker = InMemoryBroker(f"memory://{uuid.uuid4().hex}")
    relay = Relay(outbox, broker, batch=100)
    # When it drains the outbox
    assert relay.drain(timeout=30) == 0
    # Then every event reached the broker once, in the order written, and none is left
    assert [m.event_id for m in broker.messages] == written
    assert outbox.backlog() == 0


def test_an_outage_mid_drain_loses_nothing_and_keeps_the_order(outbox):
    # Given a broker that fails the third publish (while the fourth batch was read ahead)
    written = fill(outbox, 550)
    broker = FlakyBroker(f"memory://{uuid.uuid4().hex}")
    broker.fail_on = 3
    relay = Relay(outbox, broker, batch=100, retry_max=0.05)
    assert relay.lease.acquire()
    # When the relay steps into the outage
    assert relay.step() == 100 and relay.step() == 100
    with pytest.raises(BrokerUnavailableError):
        relay.step()
    # Then the unconfirmed batch is still the outbox's head
    assert outbox.backlog() == 350
    assert outbox.peek(1)[0][1][b"event_id"].decode() == written[200]
    # and once the broker is back everything arrives, in order, exactly once
    relay.lease.release()
    assert relay.drain(timeout=30) == 0
    assert [m.event_id for m in broker.messages] == written


def test_entries_written_after_a_read_are_kept_by_the_trim(outbox):
    # Given a batch read from the outbox, then a new event written after it
    fill(outbox, 3)
    batch = outbox.peek(10)
    [late] = fill(outbox, 1)
    # When the batch is removed through its last id
    outbox.remove_through(batch[-1][0])
    # Then only the late event is left
    assert [f[b"event_id"].decode() for _, f in outbox.peek(10)] == [late]


def test_the_lease_is_renewed_when_due_not_per_batch(outbox):
    # Given a relay whose lease was just taken (EVENTS_PUBLISH_TIMEOUT 15 s, lease 40 s)
    fill(outbox, 500)
    relay = Relay(outbox, InMemoryBroker(f"memory://{uuid.uuid4().hex}"), batch=10)
    lease = relay.lease = CountingLease()
    # When it publishes 50 batches in quick succession
    for _ in range(50):
        assert relay.step() == 10
    # Then one renewal covered them all (a renewal younger than 40/2 - 16 s outlives any
    # publish started now), instead of one round trip per batch
    assert lease.renewals == 1
