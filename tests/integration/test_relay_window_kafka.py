"""The relay's window on a real Kafka-protocol broker killed mid-drain: batches in flight
when Tansu is SIGKILLed lose nothing, the outbox keeps everything the broker did not
confirm, and once it is back the last copy of each event is in outbox order."""

from __future__ import annotations

import threading
from collections import defaultdict

import pytest
import redis

from redundancy.events import AnalysisCompletedEvent, WireMessage
from redundancy.events.brokers.kafka import KafkaBroker
from redundancy.events.outbox import RedisOutbox
from redundancy.events.relay import Relay
from tests.events_support import unique_topic, wait_until
from tests.services import REDIS_BACKEND_DB, KillableKafka, flush_db, redis_url, started

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = b"window-key"


class RecordingKafka(KafkaBroker):
    """Remembers every batch handed over, to tell afterwards which ones Kafka confirmed,
    and the most batches that were in flight at once."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.handed: list = []
        self.most_in_flight = 0

    def _send_async(self, messages, sending) -> None:
        super()._send_async(messages, sending)
        self.handed.append(([m.event_id for m in messages], sending))
        in_flight = sum(not s.settled for _, s in self.handed)
        self.most_in_flight = max(self.most_in_flight, in_flight)


def every_copy(bootstrap: str, topic: str, want: set[str]) -> list[tuple[str, str]]:
    """Every message on ``topic`` (duplicates included) as (event id, aggregate), in the
    order of each partition (an aggregate's events share one), until ``want`` were seen."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic()})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    copies: list[tuple[str, str]] = []
    seen: set[str] = set()

    def read(wait: float) -> int:
        got = consumer.consume(10_000, timeout=wait)
        for msg in got:
            if msg.error():
                continue
            headers = {k: v.decode() for k, v in msg.headers()}
            copies.append((headers["event_id"], msg.key().decode()))
            seen.add(headers["event_id"])
        return len(got)

    try:
        wait_until(lambda: read(0.5) >= 0 and want <= seen, 90, "every event read", every=0)
        while read(2.0):  # and the copies after them
            pass
    finally:
        consumer.close()
    return copies


def test_tansu_killed_mid_window_loses_nothing_and_keeps_the_order(redis_server, tmp_path):
    # Given 30,000 events of 7 aggregates in the outbox, and a relay keeping up to 4
    # batches of 500 in flight to a Tansu
    url = redis_url(REDIS_BACKEND_DB)
    flush_db(url)
    outbox = RedisOutbox(client=redis.Redis.from_url(url))
    written = []
    pipe = outbox._redis.pipeline(transaction=False)
    for i in range(30_000):
        event = AnalysisCompletedEvent(
            content_hash=f"h{i % 7}", redundancy_score=0, analysis_result={"n": i}
        )
        pipe.xadd(outbox.key, WireMessage.of(event, KEY).fields())
        written.append(str(event.event_id))
    pipe.execute()
    tansu = started(KillableKafka(tmp_path))
    topic = unique_topic()
    broker = RecordingKafka(f"kafka://{tansu.bootstrap}", topic=topic, publish_timeout=2.0)
    broker.connect_sync()
    relay = Relay(outbox, broker, batch=500, window=4, retry_max=0.5)
    left: list[int] = []
    draining = threading.Thread(target=lambda: left.append(relay.drain(timeout=120)))
    try:
        draining.start()
        # When Tansu is SIGKILLed while the relay drains (some batches confirmed, not all)
        wait_until(lambda: outbox.backlog() <= 27_000, 60, "the relay under way", every=0.001)
        tansu.stop()
        kept_at_kill = outbox.backlog()
        assert 0 < kept_at_kill < 30_000, "Tansu must be killed mid-drain"
        # Then the relay stops removing: what stays is a suffix of the outbox, and every
        # entry removed was confirmed by the broker before it died
        wait_until(lambda: relay.failures > 0, 30, "the relay seeing the outage")
        kept = [f[b"event_id"].decode() for _, f in outbox._redis.xrange(outbox.key)]
        assert kept == written[len(written) - len(kept) :]
        confirmed = {i for ids, s in broker.handed if s.confirmed for i in ids}
        assert set(written[: len(written) - len(kept)]) <= confirmed
        assert broker.most_in_flight >= 2, "the window had several batches in flight"
        # and once Tansu is back (empty: in-memory storage), the relay sends all of it
        tansu.start()
        draining.join(timeout=150)
        assert left == [0] and outbox.backlog() == 0
        copies = every_copy(tansu.bootstrap, topic, want=set(kept))
        assert {event_id for event_id, _ in copies} == set(kept), "nothing unconfirmed lost"
        # each aggregate's events: their last copies in the outbox's order
        last = {event_id: n for n, (event_id, _) in enumerate(copies)}
        by_aggregate: dict[str, list[str]] = defaultdict(list)
        for event_id, aggregate in copies:
            if event_id not in by_aggregate[aggregate]:
                by_aggregate[aggregate].append(event_id)
        order = {event_id: n for n, event_id in enumerate(written)}
        assert len(by_aggregate) == 7
        for ids in by_aggregate.values():
            assert sorted(ids, key=last.__getitem__) == sorted(ids, key=order.__getitem__)
    finally:
        draining.join(timeout=150)
        broker.disconnect_sync()
        tansu.stop()
