"""Killed mid-stream, nothing lost: a relay SIGKILLed while draining the outbox, and a
consumer SIGKILLed while handling (its pending entries are claimed by another member)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from redundancy import keys
from redundancy.events import AnalysisCompletedEvent, EventPublisher, WireMessage
from redundancy.events.outbox import RedisOutbox
from tests.events_support import broker_env, make_broker, unique_topic, wait_until
from tests.services import REDIS_EVENTS_DB, ROOT, flush_db, redis_url

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def events(count: int, aggregates: int = 7) -> list[AnalysisCompletedEvent]:
    return [
        AnalysisCompletedEvent(
            content_hash=f"h{i % aggregates}", redundancy_score=0.0, analysis_result={"n": i}
        )
        for i in range(count)
    ]


def fill_outbox(outbox: RedisOutbox, items: list[AnalysisCompletedEvent]) -> None:
    pipe = outbox._redis.pipeline(transaction=False)
    for event in items:
        pipe.xadd(outbox.key, WireMessage.of(event).fields())
    pipe.execute()


def stream_ids(client: redis.Redis, stream: str) -> list[str]:
    return [fields[b"event_id"].decode() for _, fields in client.xrange(stream)]


def test_a_relay_killed_mid_stream_loses_nothing(redis_cluster):
    # Given 4,000 events waiting in the outbox and a Redis Streams event broker
    events_url = redis_url(REDIS_EVENTS_DB)
    flush_db(events_url)
    topic = unique_topic()
    outbox = RedisOutbox(redis_cluster.backend_url)
    items = events(4000)
    fill_outbox(outbox, items)
    env = {
        **broker_env("redis_streams", events_url, topic),
        "EVENTS_RELAY_BATCH": "1",
        "EVENTS_RELAY_LEASE_TTL": "5",
        "EVENTS_PUBLISH_TIMEOUT": "1",
    }
    stream = keys.event_stream(topic)
    client = redis.Redis.from_url(events_url)
    # When a relay is SIGKILLed while it is draining
    first = subprocess.Popen(
        [sys.executable, "-m", "redundancy", "events", "relay"],
        env=redis_cluster.env(**env),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: client.xlen(stream) >= 100, 60, "the first relay publishing", every=0.01)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    left = outbox.backlog()
    assert 0 < left < 4000, "the relay must be killed mid-stream"
    # Then the next relay takes over once the lease expires and publishes the rest
    second = redis_cluster.crd("events", "relay", "--drain", "--timeout", "60", **env)
    assert second.returncode == 0, second.stderr
    assert outbox.backlog() == 0
    published = stream_ids(client, stream)
    expected = [str(e.event_id) for e in items]
    # every event, in outbox order (at most the batch in flight repeated, with its own id)
    assert list(dict.fromkeys(published)) == expected
    assert len(published) - len(expected) <= 1


CONSUMER = """
    import sys, time
    from tests.events_support import make_broker
    broker = make_broker("redis_streams", {url!r}, {topic!r})
    log = open({log!r}, "a", buffering=1)

    def handle(event):
        time.sleep(0.02)
        log.write(str(event.event_id) + "\\n")

    broker.consume_sync(handle, group="indexer", consumer="doomed", batch=50, signing_key=b"k")
"""


def test_a_consumer_killed_mid_stream_loses_nothing(redis_server, tmp_path):
    # Given 300 events on the stream and a consumer of group "indexer" handling them slowly
    url = redis_url(REDIS_EVENTS_DB)
    flush_db(url)
    topic = unique_topic()
    broker = make_broker("redis_streams", url, topic, claim_idle=0.5)
    items = events(300)
    EventPublisher(broker, signing_key=b"k").publish_many_sync(items)
    log = tmp_path / "handled.txt"
    log.touch()
    code = textwrap.dedent(CONSUMER.format(url=url, topic=topic, log=str(log)))
    doomed = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    # When it is SIGKILLed mid-stream, holding delivered but unacknowledged entries
    try:
        wait_until(lambda: len(log.read_text().split()) >= 30, 60, "the consumer handling")
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
    client = redis.Redis.from_url(url)
    pending = client.xpending_range(broker.stream, "indexer", "-", "+", 1000, "doomed")
    assert pending, "the consumer must die holding entries"
    by_entry = {i: f[b"event_id"].decode() for i, f in client.xrange(broker.stream)}
    stranded = {by_entry[p["message_id"]] for p in pending}
    # Then another member of the group claims them and handles every remaining event
    handled_by_doomed = set(log.read_text().split())
    rescued = []
    broker.consume_sync(
        lambda e: rescued.append(str(e.event_id)),
        group="indexer",
        consumer="rescuer",
        timeout=3,
        signing_key=b"k",
    )
    assert set(rescued) | handled_by_doomed == {str(e.event_id) for e in items}
    assert stranded <= set(rescued)
    assert client.xpending(broker.stream, "indexer")["pending"] == 0
    broker.disconnect_sync()


def _children(pid: int) -> dict[int, str]:
    """Child processes of ``pid`` with their command lines (from /proc)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                out[int(stat.parent.name)] = cmd
        except (OSError, IndexError, ValueError):
            continue
    return out


def test_the_relay_beside_a_worker_goes_when_the_worker_dies(redis_cluster):
    # Given a worker, which starts the outbox relay as a child process
    worker = redis_cluster.start_worker(concurrency=1)
    relays = wait_until(
        lambda: [
            p for p, cmd in _children(worker.proc.pid).items() if "redundancy.events.relay" in cmd
        ],
        20,
        "the relay process",
    )
    # When only the worker's main process is SIGKILLed (no shutdown hook runs)
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(timeout=10)
    # Then the relay notices it was orphaned and exits instead of running on
    wait_until(
        lambda: (
            not Path(f"/proc/{relays[0]}").exists()
            or "Z" in Path(f"/proc/{relays[0]}/stat").read_text().rsplit(")", 1)[1][:3]
        ),
        15,
        "the orphaned relay to exit",
    )
