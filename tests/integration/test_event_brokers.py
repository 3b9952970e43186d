"""Every event type round-trips through each real broker (Redis, RabbitMQ, Kafka protocol)."""

from __future__ import annotations

import asyncio
import json

import pytest

from redundancy.events import EventPublisher, signature_valid
from tests.events_support import collect, drop_rabbitmq_topic, make_broker, unique_topic
from tests.services import REDIS_EVENTS_DB, flush_db, redis_url
from tests.unit.test_events import sample_events

pytestmark = pytest.mark.integration

KEY = b"events-signing-key"


@pytest.fixture(params=["redis_streams", "rabbitmq", "kafka"])
def live_broker(request):
    """A connected broker of each kind on a fresh topic, cleaned up afterwards."""
    kind = request.param
    topic = unique_topic()
    if kind == "redis_streams":
        request.getfixturevalue("redis_server")
        url = redis_url(REDIS_EVENTS_DB)
        flush_db(url)
    elif kind == "rabbitmq":
        url = request.getfixturevalue("rabbitmq_server")
    else:
        url = request.getfixturevalue("kafka_server")
    broker = make_broker(kind, url, topic)
    broker.connect_sync()
    yield broker
    broker.disconnect_sync()
    if kind == "rabbitmq":
        drop_rabbitmq_topic(url, topic, ["round-trip", "second", "guarded"])


def test_every_event_type_round_trips_signed(live_broker):
    # Given a consumer group that exists before anything is published
    live_broker.ensure_group_sync("round-trip")
    events = sample_events()

    # When the original service's async API publishes one event of each type
    async def publish():
        await live_broker.connect()
        publisher = EventPublisher(live_broker, signing_key=KEY)
        for event in events:
            await publisher.publish(event)
        await live_broker.disconnect()

    asyncio.run(publish())
    # Then the group receives each one, equal to what was sent, with a valid signature
    got = collect(live_broker, len(events), group="round-trip", within=60, signing_key=KEY)
    assert sorted(got, key=lambda e: events.index(e)) == events
    # and, acknowledged, they are not delivered to the group again
    assert (
        live_broker.consume_sync(lambda e: None, group="round-trip", timeout=1.0, signing_key=KEY)
        == 0
    )


def test_wire_format_key_headers_and_signature(live_broker):
    live_broker.ensure_group_sync("second")
    publisher = EventPublisher(live_broker, signing_key=KEY)
    events = sample_events("aggregate-7")
    publisher.publish_many_sync(events)
    reader = live_broker._open_reader("second", None, False, "raw")
    deliveries = []
    try:
        for _ in range(30):
            deliveries += reader.fetch(10, 1.0)
            if len(deliveries) >= len(events):
                break
        for d in deliveries:
            reader.ack(d)
    finally:
        reader.close()
    assert len(deliveries) == len(events)
    for d in deliveries:
        body = json.loads(d.message.body)
        assert d.message.event_id == body["event_id"]
        assert d.message.event_type == body["event_type"]
        assert d.message.key == body["aggregate_id"]
        assert d.message.timestamp.isdigit()
        assert signature_valid(KEY, d.message.signed_content(), d.message.signature)
    if live_broker.kind == "kafka":  # one aggregate, one partition (so its order holds)
        partitions = {d.token.partition() for d in deliveries if d.message.key == "aggregate-7"}
        assert len(partitions) == 1
        assert {d.token.key().decode() for d in deliveries} == {d.message.key for d in deliveries}


def test_rabbitmq_keeps_events_no_queue_was_bound_for(rabbitmq_server):
    from kombu import Connection

    topic = unique_topic()
    broker = make_broker("rabbitmq", rabbitmq_server, topic)
    try:
        # Given no consumer group exists yet, when events are published
        EventPublisher(broker).publish_many_sync(sample_events())
        # Then they wait in <topic>.unrouted instead of being dropped
        with Connection(rabbitmq_server) as conn:
            channel = conn.channel()
            count = len(sample_events()) + 1  # one more than sent: nothing extra waits
            got = [channel.basic_get(f"{topic}.unrouted", no_ack=True) for _ in range(count)]
        bodies = [json.loads(m.body)["event_type"] for m in got if m is not None]
        assert sorted(bodies) == sorted(e.event_type for e in sample_events())
    finally:
        broker.disconnect_sync()
        drop_rabbitmq_topic(rabbitmq_server, topic, [])


def test_redis_stream_length_stays_bounded(redis_server):
    import redis

    url = redis_url(REDIS_EVENTS_DB)
    flush_db(url)
    broker = make_broker("redis_streams", url, unique_topic(), maxlen=100)
    events = [e for _ in range(50) for e in sample_events()]  # 400 events
    for start in range(0, len(events), 50):
        EventPublisher(broker).publish_many_sync(events[start : start + 50])
    length = redis.Redis.from_url(url).xlen(broker.stream)
    broker.disconnect_sync()
    assert 100 <= length < 400  # approximate MAXLEN trims whole nodes


def test_forged_relabelled_and_replayed_events_are_rejected_by_default(live_broker, monkeypatch):
    import dataclasses
    import uuid

    from redundancy.config import get_settings
    from redundancy.events import WireMessage, metrics

    # Given producers and consumers configured with a signing key
    monkeypatch.setenv("EVENTS_SIGNING_KEY", KEY.decode())
    get_settings.cache_clear()
    live_broker.ensure_group_sync("guarded")
    genuine, other = sample_events("genuine")[0], sample_events("other")[1]
    signed = WireMessage.of(genuine, KEY)
    # When the bus carries the genuine event and an attacker's variants of it
    live_broker.send_sync(
        [
            signed,
            signed,  # replayed as is
            dataclasses.replace(signed, event_id=str(uuid.uuid4())),  # replayed under a new id
            dataclasses.replace(signed, event_type=other.event_type),  # relabelled
            WireMessage.of(other, b"a key the attacker made up"),  # forged
            WireMessage.of(other, None),  # unsigned
        ]
    )
    rejected = metrics.EVENTS_CONSUMED.labels(live_broker.kind, "rejected")
    before = rejected._value.get()
    # Then a consumer with default settings (one session: it dedupes on the signed ids it
    # has handled) handles the genuine event once, and nothing else
    got = []
    live_broker.consume_sync(got.append, group="guarded", timeout=10)
    assert [e.aggregate_id for e in got] == ["genuine"]
    assert rejected._value.get() - before == 4
    get_settings.cache_clear()
