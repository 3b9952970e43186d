"""Events without services: envelope, signing, broker table, in-memory broker, bridge, relay."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime

import pytest

from redundancy.config import load_settings
from redundancy.errors import ConfigurationError
from redundancy.events import (
    EVENT_TYPES,
    AnalysisCompletedEvent,
    BatchProcessingCompletedEvent,
    BrokerUnavailableError,
    EventPublisher,
    InMemoryBroker,
    InvalidEventError,
    JobFailedEvent,
    PublishRejectedError,
    SimilarityCompletedEvent,
    WebhookDeliveredEvent,
    WireMessage,
    create_broker,
    metrics,
    parse_event,
    sign,
)
from redundancy.events.brokers import broker_url
from redundancy.events.models import (
    BatchFailedEvent,
    DocumentIndexedEvent,
    DocumentRemovedEvent,
    DuplicateDetectedEvent,
)
from redundancy.events.outbox import MemoryOutbox, get_outbox
from redundancy.events.relay import Relay
from redundancy.events.wire import CONFIGURED, configured_signing_keys, event_content
from redundancy.retry import backoff


def sample_events(aggregate: str = "agg") -> list:
    """One event of every type."""
    return [
        AnalysisCompletedEvent(
            content_hash=aggregate,
            redundancy_score=0.5,
            analysis_result={"content_hash": aggregate, "word_count": 6},
        ),
        SimilarityCompletedEvent(
            text1_hash="a",
            text2_hash="b",
            similarity_score=0.9,
            is_similar=True,
            algorithm="ratio",
            threshold=0.8,
        ),
        BatchProcessingCompletedEvent(
            batch_id=aggregate, total_jobs=3, completed_jobs=2, failed_jobs=1
        ),
        WebhookDeliveredEvent(
            endpoint_id="e" * 16,
            delivery_id="d1",
            status="delivered",
            attempts=3,
            aggregate_id=aggregate,
        ),
        JobFailedEvent(
            job="analysis",
            task_name="redundancy.analyze_content",
            error_type="EmptyTextError",
            error_message="empty",
            task_id="t1",
        ),
        DocumentIndexedEvent(corpus="news", doc_id=aggregate, text="Text.", content_hash="h"),
        DocumentRemovedEvent(corpus="news", doc_id=aggregate),
        DuplicateDetectedEvent(
            corpus="news",
            doc_id=aggregate,
            content_hash="h",
            threshold=0.8,
            matches=[{"id": "other", "score": 0.9}],
            action="rejected",
        ),
        BatchFailedEvent(
            batch_id=aggregate,
            corpus="news",
            saga_id=aggregate,
            cause="step 6: ConnectionError: down",
            failed_step=6,
            steps_total=9,
            compensated_steps=7,
        ),
    ]


@pytest.fixture
def memory_broker():
    broker = InMemoryBroker(f"memory://{uuid.uuid4().hex}")
    yield broker
    broker.clear()


@pytest.fixture
def default_broker():
    """The embedded default's broker (``memory://``), emptied around the test."""
    broker = InMemoryBroker()
    broker.clear()
    yield broker
    broker.clear()


# --- envelope -------------------------------------------------------------------------


def test_envelope_has_the_design_fields_and_round_trips_as_json():
    for event in sample_events():
        wire = json.loads(event.to_json())
        assert set(wire) == {
            "event_id",
            "event_type",
            "version",
            "aggregate_id",
            "occurred_at",
            "correlation_id",
            "trace_id",
            "task_id",
            "payload",
        }
        assert uuid.UUID(wire["event_id"])
        assert wire["occurred_at"].endswith("Z")
        assert datetime.fromisoformat(wire["occurred_at"]).utcoffset().total_seconds() == 0
        assert parse_event(event.to_json()) == event
        assert type(parse_event(event.to_json())) is type(event)
    assert {e.event_type for e in sample_events()} == set(EVENT_TYPES)


def test_flat_payload_and_default_aggregates():
    a, s, b, w, f, indexed, removed, duplicate, failed = sample_events("x1")
    assert (a.aggregate_id, a.payload.redundancy_score) == ("x1", 0.5)
    assert s.aggregate_id == "a:b"
    assert b.aggregate_id == "x1" and b.payload.failed_jobs == 1
    assert w.aggregate_id == "x1" and w.payload.attempts == 3
    assert f.aggregate_id == "t1"
    assert indexed.aggregate_id == removed.aggregate_id == duplicate.aggregate_id == "news/x1"
    assert failed.aggregate_id == "x1" and failed.payload.compensated_steps == 7


def test_bad_events_are_refused():
    with pytest.raises(InvalidEventError):
        parse_event(b"not json")
    with pytest.raises(InvalidEventError):
        parse_event(b'{"event_type": "analysis.completed", "aggregate_id": "x", "payload": {}}')
    with pytest.raises(ValueError, match="time zone"):
        AnalysisCompletedEvent(
            content_hash="h",
            redundancy_score=0,
            analysis_result={},
            occurred_at=datetime(2024, 1, 1),
        )
    unknown = parse_event(
        b'{"event_type": "future.event", "aggregate_id": "x", "payload": {"k": 1}}'
    )
    assert unknown.event_type == "future.event" and unknown.payload == {"k": 1}


def test_signature_covers_the_exact_body():
    event = sample_events()[0]
    message = WireMessage.of(event, b"key")
    content = event_content(message.event_id, message.event_type, message.timestamp, message.body)
    assert message.signature == sign(b"key", content)
    assert message.signature.startswith("v1,")
    assert message.event(b"key") == event
    with pytest.raises(InvalidEventError, match="signature"):
        message.event(b"other key")
    tampered = dataclasses.replace(message, body=message.body.replace(b"0.5", b"0.9"))
    with pytest.raises(InvalidEventError, match="signature"):
        tampered.event(b"key")
    unsigned = WireMessage.of(event)
    with pytest.raises(InvalidEventError):
        unsigned.event(b"key")


def test_a_signed_message_survives_a_stream_entry_as_redis_returns_it():
    # Given a signed message written as a stream entry's fields (the outbox, the Redis
    # Streams broker), When it is read back with bytes keys and values (redis-py) or str
    event = sample_events()[0]
    message = WireMessage.of(event, b"key")
    as_bytes = {k.encode(): v if isinstance(v, bytes) else v.encode()
                for k, v in message.fields().items()}  # fmt: skip
    as_text = {k: v.decode() if isinstance(v, bytes) else v for k, v in message.fields().items()}
    # Then every header the signature covers is kept and the signature still verifies
    for fields in (as_bytes, as_text):
        read = WireMessage.from_fields(fields)
        assert (read.event_id, read.event_type, read.timestamp, read.signature) == (
            message.event_id, message.event_type, message.timestamp, message.signature
        )  # fmt: skip
        assert read.event(b"key") == event


def test_the_signature_covers_id_type_and_time_so_relabels_and_replays_are_refused():
    # Given an event signed on the bus
    event, other = sample_events()[0], sample_events()[1]
    message = WireMessage.of(event, b"key")
    # When an attacker replays it under a new id, relabels it as another type, or moves
    # its signing time (each header changed, the signature kept)
    forged = [
        dataclasses.replace(message, event_id=str(uuid.uuid4())),
        dataclasses.replace(message, event_type=other.event_type),
        dataclasses.replace(message, timestamp=str(int(message.timestamp) + 3600)),
        dataclasses.replace(message, timestamp=None),
    ]
    # Then each is refused by a verifying consumer
    for copy in forged:
        with pytest.raises(InvalidEventError, match="signature"):
            copy.event(b"key")
    # and even without verification a header that disagrees with the envelope is refused
    for copy in forged[:2]:
        with pytest.raises(InvalidEventError, match="relabelled"):
            copy.event(None)
    # and the old body-only scheme (sha256=<hex> of the body) no longer verifies
    legacy = "sha256=" + hmac.new(b"key", message.body, hashlib.sha256).hexdigest()
    with pytest.raises(InvalidEventError, match="signature"):
        dataclasses.replace(message, signature=legacy).event(b"key")


def test_a_key_rotation_signs_with_both_keys_and_either_verifies():
    # Given producers that sign with the new key and the one being rotated out
    event = sample_events()[0]
    message = WireMessage.of(event, [b"new", b"old"])
    # Then the message carries two signatures, and a consumer holding either key (or
    # both, in either order) accepts it; one holding neither refuses it
    assert len(message.signature.split()) == 2
    for keys in ([b"new"], [b"old"], [b"old", b"new"]):
        assert message.event(keys) == event
    with pytest.raises(InvalidEventError):
        message.event([b"other"])
    # and a consumer rotating (new first, old accepted) verifies an old producer's event
    assert WireMessage.of(event, b"old").event([b"new", b"old"]) == event


def test_configured_keys_come_from_the_key_and_the_previous_ones(settings_env):
    settings_env(EVENTS_SIGNING_KEY="k2", EVENTS_SIGNING_KEYS_PREVIOUS="k1, k0")
    assert configured_signing_keys() == (b"k2", b"k1", b"k0")
    message = WireMessage.of(sample_events()[0], CONFIGURED)
    assert len(message.signature.split()) == 3


# --- choosing a broker ----------------------------------------------------------------


def test_broker_table_by_scheme_and_did_you_mean():
    from redundancy.events import KafkaBroker, RabbitMQBroker, RedisStreamBroker

    assert type(create_broker("redis://localhost:6379/3")) is RedisStreamBroker
    assert type(create_broker("amqp://guest:guest@localhost//")) is RabbitMQBroker
    assert type(create_broker("kafka://localhost:9092")) is KafkaBroker
    assert type(create_broker("memory://")) is InMemoryBroker
    with pytest.raises(ConfigurationError, match=r"did you mean kafka://\?"):
        create_broker("kafak://localhost:9092")
    with pytest.raises(ConfigurationError, match="no scheme"):
        create_broker("localhost:9092")


def test_missing_kafka_library_gives_an_install_hint():
    code = textwrap.dedent("""
        import sys
        sys.modules["confluent_kafka"] = None  # as if not installed
        from redundancy.events import KafkaBroker
        try:
            KafkaBroker("kafka://localhost:9092")
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "MissingClientLibraryError" in out.stdout
    assert "pip install 'content-redundancy-detector[kafka]'" in out.stdout


def test_broker_from_settings():
    assert broker_url(load_settings()) == "memory://"
    cluster = {"celery_broker_url": "redis://h:6379/0"}
    assert broker_url(load_settings(**cluster)) == "redis://h:6379/0"  # the result backend
    assert broker_url(load_settings(**cluster, redis_url="redis://e:6379/3")) == "redis://e:6379/3"
    kafka = load_settings(**cluster, message_broker_type="kafka", kafka_bootstrap_servers="k:9092")
    assert broker_url(kafka) == "kafka://k:9092"
    with pytest.raises(ConfigurationError, match="MESSAGE_BROKER_TYPE=kafka needs KAFKA_BOOTSTRAP"):
        load_settings(**cluster, message_broker_type="kafka")
    with pytest.raises(ConfigurationError, match="MESSAGE_BROKER_TYPE"):
        load_settings(message_broker_type="zeromq")
    with pytest.raises(ConfigurationError, match="EVENTS_RELAY_LEASE_TTL"):
        load_settings(events_relay_lease_ttl=5, events_publish_timeout=10)


# --- in-memory broker: the consume contract -------------------------------------------


def test_async_api_of_the_original(memory_broker):
    events = sample_events()

    async def main():
        await memory_broker.connect()
        publisher = EventPublisher(memory_broker, signing_key=b"k")
        for event in events:
            await publisher.publish(event)
        got = []

        async def handler(event):
            await asyncio.sleep(0)
            got.append(event)

        n = await memory_broker.consume(handler, group="g", timeout=0.3, signing_key=b"k")
        await memory_broker.disconnect()
        return n, got

    n, got = asyncio.run(main())
    assert n == len(events) and got == events


def test_consumer_acknowledges_after_the_handler_and_drops_repeats(memory_broker):
    events = sample_events()
    memory_broker.ensure_group_sync("g")
    publisher = EventPublisher(memory_broker, signing_key=b"k")
    publisher.publish_many_sync(events)
    publisher.publish_sync(events[0])  # a redelivered duplicate (same event_id)

    def failing(event):
        raise RuntimeError("handler crashed")

    # Given a handler that fails: the event stays unacknowledged
    with pytest.raises(RuntimeError):
        memory_broker.consume_sync(failing, group="g", timeout=0.2, signing_key=b"k")
    # When a healthy consumer of the group reads
    got = []
    handled = memory_broker.consume_sync(got.append, group="g", timeout=0.2, signing_key=b"k")
    # Then it gets every event once, starting with the one that failed
    assert handled == len(events)
    assert [e.event_id for e in got] == [e.event_id for e in events]
    # and the group has nothing left
    assert memory_broker.consume_sync(got.append, group="g", timeout=0.1, signing_key=b"k") == 0


def test_consumers_verify_by_default_and_refuse_to_start_without_a_key(memory_broker, settings_env):
    # Given no key configured, When a consumer starts without saying verify=False
    EventPublisher(memory_broker).publish_many_sync(sample_events())
    from redundancy.events import MissingSigningKeyError

    # Then it refuses to start, naming the setting and the way out
    with pytest.raises(MissingSigningKeyError, match=r"EVENTS_SIGNING_KEY.*verify=False"):
        memory_broker.consume_sync(lambda e: None, from_beginning=True, timeout=0.1)
    # and told verify=False, it reads the unsigned events
    got = []
    memory_broker.consume_sync(got.append, from_beginning=True, timeout=0.2, verify=False)
    assert len(got) == len(sample_events())
    # Given a configured key, Then the default consumer verifies with it: forged events
    # (signed with another key, or unsigned) are dropped, signed ones handled
    settings_env(EVENTS_SIGNING_KEY="the-key")
    memory_broker.clear()
    EventPublisher(memory_broker).publish_sync(sample_events("signed")[0])
    EventPublisher(memory_broker, signing_key=b"forger").publish_sync(sample_events("forged")[0])
    EventPublisher(memory_broker, signing_key=None).publish_sync(sample_events("unsigned")[0])
    got = []
    memory_broker.consume_sync(got.append, from_beginning=True, timeout=0.2)
    assert [e.aggregate_id for e in got] == ["signed"]


def test_a_replay_under_the_same_signed_id_is_dropped_and_a_new_id_is_refused(memory_broker):
    # Given a signed event on the bus, replayed as is and replayed under a new id
    message = WireMessage.of(sample_events()[0], b"k")
    renamed = dataclasses.replace(message, event_id=str(uuid.uuid4()))
    memory_broker.send_sync([message, message, renamed])
    got = []
    before = metrics.EVENTS_CONSUMED.labels("memory", "rejected")._value.get()
    # When a verifying consumer reads them
    memory_broker.consume_sync(got.append, from_beginning=True, timeout=0.2, signing_key=b"k")
    # Then it handles the event once: the replay is a duplicate, the renamed copy forged
    assert len(got) == 1
    assert metrics.EVENTS_CONSUMED.labels("memory", "rejected")._value.get() == before + 1


def test_type_filter_and_signature_check(memory_broker):
    EventPublisher(memory_broker, signing_key=b"good").publish_many_sync(sample_events())
    memory_broker.send_sync([WireMessage.of(sample_events("forged")[0], b"bad")])
    got = []
    memory_broker.consume_sync(
        got.append,
        from_beginning=True,
        timeout=0.2,
        event_types=["analysis.completed"],
        signing_key=b"good",
    )
    assert [e.aggregate_id for e in got] == ["agg"]  # the forged one was rejected


# --- the bridge on the embedded default ----------------------------------------------------


def test_finished_jobs_emit_events_with_deterministic_ids(default_broker):
    from redundancy.events.models import event_id_for
    from redundancy.tasks import analyze_content, compare_texts

    r1 = analyze_content.delay("The cat sat. The cat sat.")
    r2 = compare_texts.delay("hello world", "hello there")
    r3 = analyze_content.delay("   ")
    events = {e.event_type: e for e in default_broker.events()}
    assert list(events) == ["analysis.completed", "similarity.completed", "job.failed"]
    analysis = events["analysis.completed"]
    assert analysis.event_id == event_id_for("analysis.completed", r1.id)
    assert analysis.task_id == r1.id and analysis.correlation_id == r1.id
    assert analysis.aggregate_id == r1.result["content_hash"]
    assert analysis.payload.analysis_result == r1.result
    assert events["similarity.completed"].payload.similarity_score == r2.result["similarity_score"]
    failed = events["job.failed"]
    assert (failed.payload.job, failed.payload.error_type, failed.task_id) == (
        "analysis",
        "EmptyTextError",
        r3.id,
    )


def test_a_batch_emits_one_event_not_one_per_chunk(default_broker, settings_env):
    from redundancy.tasks import process_batch

    settings_env(BATCH_CHUNK_SIZE="2")
    items = [f"Document number {i}. It has words." for i in range(7)] + [""]
    result = process_batch.delay(items).get()
    events = default_broker.events()
    assert [e.event_type for e in events] == ["batch.completed"]
    payload = events[0].payload
    assert (payload.batch_id, payload.total_jobs, payload.completed_jobs, payload.failed_jobs) == (
        result["batch_id"],
        8,
        7,
        1,
    )


def test_a_broken_outbox_never_fails_the_job(default_broker, monkeypatch):
    from redundancy.tasks import analyze_content

    def broken(message):
        raise BrokerUnavailableError("outbox down")

    monkeypatch.setattr(get_outbox(), "append", broken)
    before = metrics.EVENTS_FAILED.labels("outbox")._value.get()
    result = analyze_content.delay("Fine. Fine.")
    assert result.successful() and result.result["redundancy_score"] == 0.5
    assert metrics.EVENTS_FAILED.labels("outbox")._value.get() == before + 1
    assert default_broker.events() == []


def test_the_inline_relay_is_the_process_shared_one_and_follows_a_reset():
    from redundancy import resources
    from redundancy.events.emitter import inline_relay

    # Given the embedded default's relay
    relay = inline_relay()
    # Then it is this process's one, relaying this process's outbox
    assert inline_relay() is relay and relay.outbox is get_outbox()
    # When the process's resources are reset (as after a fork, or between tests)
    resources.reset()
    # Then the next one relays the new outbox, not the one it held before
    assert inline_relay() is not relay and inline_relay().outbox is get_outbox()


def test_what_the_inline_relay_could_not_deliver_is_delivered_at_exit():
    # Given the embedded default, with its event broker down when a job emits
    code = textwrap.dedent("""
        import atexit
        from redundancy.events import AnalysisCompletedEvent, InMemoryBroker
        from redundancy.events.emitter import emit, inline_relay
        from redundancy.events.errors import BrokerUnavailableError

        broker = InMemoryBroker()  # the embedded default's topic
        atexit.register(lambda: print("after exit", len(broker.messages)))  # runs last
        relay = inline_relay()
        send = relay.broker._send

        def down(messages):
            raise BrokerUnavailableError("down")

        relay.broker._send = down
        emit(AnalysisCompletedEvent(content_hash="h", redundancy_score=0, analysis_result={}))
        print("at emit", len(broker.messages), relay.outbox.backlog())
        relay.broker._send = send  # back before the process exits
    """)
    # When the process exits
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Then the event that waited in the in-memory outbox was relayed on the way out
    assert out.stdout.split("\n")[:2] == ["at emit 0 1", "after exit 1"]


def test_events_disabled(default_broker, settings_env):
    from redundancy.tasks import analyze_content

    settings_env(EVENTS_ENABLED="false")
    analyze_content.delay("Fine. Fine.")
    assert default_broker.events() == []


# --- the relay: order, outages, poison ----------------------------------------------------


class FlakyBroker(InMemoryBroker):
    """Refuses to publish while ``down``; refuses one event id for good."""

    down = False
    poison: str | None = None

    def _send(self, messages):
        if self.down:
            raise BrokerUnavailableError("down")
        if any(m.event_id == self.poison for m in messages):
            raise PublishRejectedError("too large")
        super()._send(messages)


def _fill(outbox, count, aggregates=3):
    events = [
        AnalysisCompletedEvent(
            content_hash=f"h{i % aggregates}", redundancy_score=0, analysis_result={"n": i}
        )
        for i in range(count)
    ]
    for event in events:
        outbox.append(WireMessage.of(event))
    return events


def test_relay_keeps_everything_while_the_broker_is_down_then_drains_in_order():
    outbox = MemoryOutbox()
    broker = FlakyBroker(f"memory://{uuid.uuid4().hex}")
    relay = Relay(outbox, broker, batch=7, retry_max=0.05)
    events = _fill(outbox, 50)
    # Given the broker is down: nothing leaves the outbox and the backlog shows it
    broker.down = True
    with pytest.raises(BrokerUnavailableError):
        relay.step()
    assert outbox.backlog() == 50 and broker.messages == []
    assert relay.drain(timeout=0.3) == 50
    # When it is back, the outbox drains in the order the events were written
    broker.down = False
    assert relay.drain(timeout=5) == 0
    assert [m.event_id for m in broker.messages] == [str(e.event_id) for e in events]
    assert outbox.backlog() == 0 and outbox.oldest_age() is None


def test_relay_dead_letters_poison_and_keeps_the_order_of_the_rest():
    outbox = MemoryOutbox()
    broker = FlakyBroker(f"memory://{uuid.uuid4().hex}")
    events = _fill(outbox, 10)
    broker.poison = str(events[4].event_id)
    outbox.append(WireMessage("x", "analysis.completed", "k", b"{}"))  # fine for the relay
    outbox._entries.append(("1-1", {"body": b"no headers"}))  # unreadable entry
    relay = Relay(outbox, broker, batch=100)
    assert relay.drain(timeout=5) == 0
    expected = [str(e.event_id) for e in events if e is not events[4]] + ["x"]
    assert [m.event_id for m in broker.messages] == expected
    assert outbox.dead_letters() == 2


class BlippingRedis:
    """A redis-py client whose XADD fails ``failures`` times, then succeeds."""

    def __init__(self, failures):
        self.failures = failures
        self.added = []

    def xadd(self, key, fields):
        import redis

        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("blip")
        self.added.append(fields)


@pytest.mark.parametrize(("failures", "written"), [(2, True), (3, False)])
def test_the_outbox_write_is_retried_by_its_named_policy(monkeypatch, failures, written):
    from redundancy.events import outbox as outbox_module
    from redundancy.retry import OUTBOX_WRITE_RETRY

    # Given a Redis that fails the outbox's XADD ``failures`` times (waits recorded)
    waits = []
    monkeypatch.setattr(outbox_module.time, "sleep", waits.append)
    client = BlippingRedis(failures)
    outbox = outbox_module.RedisOutbox(client=client)
    message = WireMessage("e1", "analysis.completed", "k", b"{}")
    # When an event is written
    if written:
        outbox.append(message)
    else:
        with pytest.raises(BrokerUnavailableError, match="outbox write failed"):
            outbox.append(message)
    # Then it is written once within the policy's attempts, else refused after them,
    # having waited the policy's growing, capped delays in between
    assert len(client.added) == int(written)
    assert OUTBOX_WRITE_RETRY.attempts == 3 and len(waits) == 2
    assert 0.1 <= waits[0] <= 0.2 and 0.2 <= waits[1] <= 0.4


def test_backoff_grows_with_jitter_and_is_capped():
    assert 0.25 <= backoff(1, cap=30) <= 0.5
    assert 4 <= backoff(5, cap=30) <= 8
    assert 15 <= backoff(50, cap=30) <= 30


def test_backlog_is_measured_for_metrics():
    outbox = MemoryOutbox()
    broker = FlakyBroker(f"memory://{uuid.uuid4().hex}")
    broker.down = True
    _fill(outbox, 12)
    # the oldest entry written 30 s ago (its stream-style id carries the time)
    _, fields = outbox._entries[0]
    outbox._entries[0] = (f"{int(time.time() * 1000) - 30_000}-0", fields)
    relay = Relay(outbox, broker)
    metrics.OUTBOX_BACKLOG.set(-1)  # values no measurement can give: the update must set them
    metrics.OUTBOX_OLDEST_AGE.set(-1)
    relay.update_gauges(force=True)
    assert metrics.OUTBOX_BACKLOG._value.get() == 12
    assert metrics.OUTBOX_OLDEST_AGE._value.get() == pytest.approx(outbox.oldest_age(), abs=0.5)
    assert outbox.oldest_age() >= 30
    broker.down = False
    relay.drain(timeout=5)
    relay.update_gauges(force=True)
    assert metrics.OUTBOX_BACKLOG._value.get() == 0


def test_correlation_id_seam():
    from types import SimpleNamespace

    from redundancy.correlation import correlation_id_of
    from redundancy.observability import correlation_scope

    # Celery's own correlation_id property is the task id: never taken for ours
    assert correlation_id_of(SimpleNamespace(id="t", correlation_id="t", root_id="r")) == "r"
    given = SimpleNamespace(id="t", crd_correlation_id="given", root_id="r")
    assert correlation_id_of(given) == "given"
    assert correlation_id_of(SimpleNamespace(id="t", root_id=None)) == "t"
    # the id bound for the task's run (observability's context) wins
    with correlation_scope("bound"):
        assert correlation_id_of(given) == "bound"


def test_a_broker_signs_with_the_configured_key_like_the_publisher(monkeypatch):
    import asyncio

    from redundancy.config import get_settings
    from redundancy.events import AnalysisCompletedEvent, EventPublisher, InMemoryBroker

    monkeypatch.setenv("EVENTS_SIGNING_KEY", "k")
    get_settings.cache_clear()
    try:
        event = AnalysisCompletedEvent(content_hash="h", redundancy_score=0.1, analysis_result={})
        broker = InMemoryBroker(url="memory://signing-test")

        async def publish_both():
            await broker.connect()
            await broker.publish(event)  # the broker's own face
            await EventPublisher(broker).publish(event)  # the publisher's
            await broker.publish(event, signing_key=None)  # explicitly unsigned

        asyncio.run(publish_both())
        signatures = [m.signature for m in broker._log.messages]
        assert signatures[0] is not None and signatures[0] == signatures[1]
        assert signatures[2] is None
    finally:
        get_settings.cache_clear()


def test_a_relay_that_lost_its_lease_publishes_nothing():
    from redundancy.events import InMemoryBroker
    from redundancy.events.outbox import MemoryOutbox
    from redundancy.events.relay import Relay
    from redundancy.events.wire import WireMessage

    class LostLease:
        def acquire(self) -> bool:
            return True

        def renew(self) -> bool:
            return False  # another relay took over meanwhile

        def release(self) -> None:
            pass

    outbox = MemoryOutbox()
    outbox.append(WireMessage.of(sample_events()[0]))
    broker = InMemoryBroker(url="memory://lost-lease")
    relay = Relay(outbox, broker, lease_ttl=40)
    relay.lease = LostLease()
    assert relay.step() == 0
    assert outbox.backlog() == 1 and broker._log.messages == []


def test_the_relay_module_runs_as_a_command_and_refuses_the_embedded_default():
    # Given no broker configured (the embedded default relays inline, in the job's process)
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    # When the relay is started the way a worker starts it, and through crd
    commands = (
        ["-W", "error::RuntimeWarning", "-m", "redundancy.events.relay", "--drain"],
        ["-m", "redundancy", "events", "relay", "--drain"],
    )
    runs = [
        subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=env, check=False
        )
        for args in commands
    ]
    # Then both refuse with the same one-line reason and the usage exit code, no traceback
    # (and runpy did not find the module imported twice: no RuntimeWarning turned error)
    for out in runs:
        assert out.returncode == 2, out.stderr
        assert "embedded default relays inline" in out.stderr
        assert "Traceback" not in out.stderr
