"""Real workers, real event brokers, real outages: every finished job's event arrives.

For each broker: a worker completes jobs -> exactly one event per job (distinct event ids);
then the event broker is really stopped (Redis and Tansu killed by PID, RabbitMQ's port
cut by a proxy) while more jobs complete -> the jobs succeed, the events wait in the
outbox (measurable), and once the broker is back they all arrive, in order per aggregate.
"""

from __future__ import annotations

import json
from collections import defaultdict
from urllib.parse import urlsplit, urlunsplit

import pytest

from redundancy.events.outbox import RedisOutbox
from tests.events_support import (
    broker_env,
    collect,
    drop_rabbitmq_topic,
    make_broker,
    unique_topic,
    wait_until,
)
from tests.services import RABBITMQ_URL, KillableKafka, PrivateRedis, TcpProxy, started
from tests.webhook_server import WebhookServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "bridge-signing-key"
SECRET = "bridge-webhook-secret"
TEXTS = ["Alpha text. Alpha text.", "Beta words here. Beta words here!", "Gamma is different."]

PHASE_ONE = """
    import json
    from redundancy.tasks import analyze_content, compare_texts, process_batch
    texts = {texts!r}
    jobs = []
    runs = [analyze_content.delay(texts[i % 3]) for i in range(6)]
    runs += [compare_texts.delay(texts[0], texts[1]), compare_texts.delay(texts[1], texts[2])]
    failing = analyze_content.delay("   ")
    batch = process_batch.delay(texts + ["Delta. Delta.", ""], webhook_url={hook!r})
    for r in runs:
        r.get(timeout=90)
    failing.get(timeout=90, propagate=False)
    batch.get(timeout=90)
    print(json.dumps({{"analysis": [r.id for r in runs[:6]], "similarity": [r.id for r in runs[6:]],
                      "failed": failing.id, "batch": batch.id, "states": [r.state for r in runs]}}))
"""

PHASE_TWO = """
    import json, time
    from redundancy.tasks import analyze_content
    texts = {texts!r}
    started = time.monotonic()
    runs = [analyze_content.delay(texts[i % 2]) for i in range(5)]
    values = [r.get(timeout=60) for r in runs]
    print(json.dumps({{"ids": [r.id for r in runs], "states": [r.state for r in runs],
                      "hashes": [v["content_hash"] for v in values],
                      "seconds": time.monotonic() - started}}))
"""


class EventBrokerUnderTest:
    """One kind of event broker with a way to really take it down and bring it back."""

    def __init__(self, kind: str, tmp_path) -> None:
        self.kind = kind
        if kind == "redis_streams":
            self.server = PrivateRedis(tmp_path)
            self.server.start()
            self.worker_url = self.check_url = self.server.url
        elif kind == "kafka":  # a private broker, even with an external Kafka: it is killed
            self.server = started(KillableKafka(tmp_path))
            self.worker_url = self.check_url = self.server.bootstrap
        else:
            parts = urlsplit(RABBITMQ_URL)
            self.server = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
            self.server.start()
            netloc = f"{parts.username}:{parts.password}@127.0.0.1:{self.server.port}"
            self.worker_url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
            self.check_url = RABBITMQ_URL

    def down(self) -> None:
        self.server.cut() if self.kind == "rabbitmq" else self.server.stop()

    def up(self) -> None:
        self.server.restore() if self.kind == "rabbitmq" else self.server.start()

    def close(self) -> None:
        self.server.cut() if self.kind == "rabbitmq" else self.server.stop()


CASES = {"redis_streams": "redis_cluster", "kafka": "redis_cluster", "rabbitmq": "rabbitmq_cluster"}


@pytest.mark.parametrize("kind", list(CASES))
def test_every_job_event_arrives_once_and_survives_a_broker_outage(kind, request, tmp_path):
    if kind == "rabbitmq":
        request.getfixturevalue("rabbitmq_server")
    cluster = request.getfixturevalue(CASES[kind])
    target = EventBrokerUnderTest(kind, tmp_path)
    topic = unique_topic()
    hooks = WebhookServer(SECRET.encode()).start()
    checker = make_broker(kind, target.check_url, topic)
    try:
        cluster.extra_env.update(
            broker_env(kind, target.worker_url, topic),
            EVENTS_SIGNING_KEY=KEY,
            EVENTS_PUBLISH_TIMEOUT="2",
            EVENTS_RELAY_RETRY_MAX="1",
            EVENTS_RELAY_LEASE_TTL="7",
            BATCH_CHUNK_SIZE="2",
            WEBHOOK_SECRET=SECRET,
            WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
            WEBHOOK_ALLOWED_PORTS=str(hooks.port),
            WEBHOOK_BACKOFF="0.1",
        )
        checker.ensure_group_sync("checker")  # RabbitMQ: the group's queue exists first
        worker = cluster.start_worker(concurrency=1)

        # --- Given a healthy event broker, when a worker completes 11 jobs ----------------
        jobs = cluster.producer(PHASE_ONE.format(texts=TEXTS, hook=hooks.url))
        assert jobs["states"] == ["SUCCESS"] * 8
        got = collect(checker, 11, group="checker", within=90, signing_key=KEY.encode())
        # Then exactly one event per job arrives (repeats only with the same event_id)
        by_id = {e.event_id: e for e in got}
        assert len(by_id) == 11, sorted(e.event_type for e in by_id.values())
        per_job = defaultdict(set)
        for e in by_id.values():
            by_batch = e.event_type in ("batch.completed", "webhook.delivered")
            per_job[(e.event_type, e.aggregate_id if by_batch else e.task_id)].add(e.event_id)
        expected = {("analysis.completed", t) for t in jobs["analysis"]}
        expected |= {("similarity.completed", t) for t in jobs["similarity"]}
        expected |= {
            ("job.failed", jobs["failed"]),
            ("batch.completed", jobs["batch"]),
            ("webhook.delivered", jobs["batch"]),
        }
        assert set(per_job) == expected
        assert all(len(ids) == 1 for ids in per_job.values())
        [webhook] = [e for e in by_id.values() if e.event_type == "webhook.delivered"]
        assert (webhook.payload.status, webhook.payload.attempts) == ("delivered", 1)
        assert len(hooks.received) == 1 and hooks.received[0].signature_ok
        [batch] = [e for e in by_id.values() if e.event_type == "batch.completed"]
        assert (batch.payload.total_jobs, batch.payload.failed_jobs) == (5, 1)
        if kind == "redis_streams":
            tail = cluster.crd(
                "events",
                "tail",
                "--from-beginning",
                "--type",
                "analysis.completed",
                "--max",
                "6",
                "--timeout",
                "10",
            )
            assert tail.returncode == 0, tail.stderr
            lines = [json.loads(line) for line in tail.stdout.splitlines()]
            assert {line["task_id"] for line in lines} == set(jobs["analysis"])

        # --- When the event broker is really down while 5 more jobs complete -------------
        target.down()
        outbox = RedisOutbox(cluster.backend_url)
        assert outbox.backlog() == 0
        more = cluster.producer(PHASE_TWO.format(texts=TEXTS))
        # Then the jobs succeed and their events wait in the outbox, measurably
        assert more["states"] == ["SUCCESS"] * 5
        wait_until(lambda: outbox.backlog() == 5, 10, "5 events in the outbox")
        status = cluster.crd("events", "status")
        assert json.loads(status.stdout)["backlog"] == 5, status.stderr
        if kind == "redis_streams":
            doctor = cluster.crd("doctor")
            assert doctor.returncode == 1 and "✗ event broker" in doctor.stdout, doctor.stdout
        wait_until(lambda: "unavailable" in worker.text(), 20, "the relay noticing the outage")

        # --- When the broker is back, every waiting event arrives, in order per aggregate ---
        target.up()
        checker.disconnect_sync()
        arrived = collect(checker, 5, group="checker", within=90, signing_key=KEY.encode())
        assert {e.task_id for e in arrived} == set(more["ids"])
        assert len({e.event_id for e in arrived}) == 5
        wait_until(lambda: outbox.backlog() == 0, 10, "an empty outbox")
        for aggregate in set(more["hashes"]):
            sent = [t for t, h in zip(more["ids"], more["hashes"], strict=True) if h == aggregate]
            seen = list(dict.fromkeys(e.task_id for e in arrived if e.aggregate_id == aggregate))
            assert seen == sent
    finally:
        checker.disconnect_sync()
        hooks.stop()
        cluster.stop()
        target.close()
        if kind == "rabbitmq":
            drop_rabbitmq_topic(RABBITMQ_URL, topic, ["checker"])
