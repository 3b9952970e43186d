"""Event handlers in real ``crd events handle`` processes on real brokers and Redis.

The handlers of ``tests.handlers_sample`` count what they do in Redis; the tests publish
signed events to the broker, run handler processes (and kill them), and read the counts,
the consumer groups and the dead-letter stream.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redundancy import keys
from redundancy.events.claims import LocalHandlerState, RedisHandlerState, claim_key
from redundancy.events.models import AnalysisCompletedEvent, SimilarityCompletedEvent
from tests.events_support import make_broker, wait_until
from tests.services import (
    REDIS_EVENTS_DB,
    ROOT,
    flush_db,
    is_service_setting,
    redis_url,
)
from tests.webhook_server import WebhookServer

KEY = "handler-test-signing-key"
SAMPLE = "tests.handlers_sample"
SECRET = "handler-webhook-secret"


@pytest.fixture
def bus(redis_server: str, tmp_path: Path) -> Iterator[Bus]:
    url = redis_url(REDIS_EVENTS_DB)
    flush_db(url)
    bus = Bus(url, f"crd-test-{uuid.uuid4().hex[:10]}", tmp_path)
    yield bus
    bus.stop()


class Bus:
    """Redis Streams events (and handler state, and the samples' counters) on one test
    database; handler processes started and stopped by PID."""

    def __init__(self, url: str, topic: str, tmp: Path) -> None:
        self.url, self.topic, self.tmp = url, topic, tmp
        self.redis = redis.Redis.from_url(url)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.extra: dict[str, str] = {}

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not is_service_setting(k)}
        env.update(
            PYTHONPATH=str(ROOT),
            MESSAGE_BROKER_TYPE="redis_streams",
            REDIS_URL=self.url,
            EVENTS_TOPIC=self.topic,
            EVENTS_SIGNING_KEY=KEY,
            HANDLER_SAMPLE_REDIS=self.url,
        )
        env.update(self.extra)
        env.update(extra)
        return env

    def publish(self, *events: Any, kind: str = "redis_streams", url: str | None = None) -> None:
        broker = make_broker(kind, url or self.url, self.topic)
        try:
            for event in events:
                broker.publish_sync(event, KEY.encode())
        finally:
            broker.disconnect_sync()

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """``crd events handle`` in its own process group, in the background."""
        log = (self.tmp / f"handle-{uuid.uuid4().hex[:8]}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "redundancy", "events", "handle", "--module", SAMPLE, *args],
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=self.tmp,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def run(self, *args: str, **env: str) -> dict[str, Any]:
        """``crd events handle`` to the end: its summary (the last line it prints)."""
        proc = self.start(*args, **env)
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, self.logs()
        summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return summary

    def finish(self, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, self.logs()
        summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return summary

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("handle-*.log")))

    def count(self, name: str) -> int:
        return int(self.redis.get(name) or 0)

    def pending(self, handler: str, consumer: str | None = None) -> int:
        stream, group = keys.event_stream(self.topic), f"crd-handlers.{handler}"
        if consumer is None:
            return int(self.redis.xpending(stream, group)["pending"])
        entries = self.redis.xpending_range(stream, group, "-", "+", 100, consumername=consumer)
        return len(entries)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        self.redis.close()


def analysis(content_hash: str = "h") -> AnalysisCompletedEvent:
    return AnalysisCompletedEvent(
        content_hash=content_hash, redundancy_score=0.5, analysis_result={}
    )


# --- claims: the same transitions in Redis and in one process ------------------------------


@pytest.fixture(params=["redis", "local"])
def state(request: pytest.FixtureRequest) -> Any:
    if request.param == "local":
        return LocalHandlerState()
    request.getfixturevalue("redis_server")
    url = redis_url(REDIS_EVENTS_DB)
    flush_db(url)
    return RedisHandlerState(redis.Redis.from_url(url), done_ttl=60)


def test_a_claim_runs_once_then_is_done_for_every_process(state):
    # Given an event's claim taken by process a
    key = claim_key("g", "h", str(uuid.uuid4()))
    first = state.claim(key, "a", 30)
    # When process b asks while a runs, then after a finished
    busy = state.claim(key, "b", 30)
    state.done(key)
    after = state.claim(key, "b", 30)
    # Then a runs it (try 1), b waits for a's lease, then skips it as done
    assert (first.status, first.tries) == ("run", 1)
    assert busy.status == "busy" and 0 < busy.wait <= 30
    assert after.status == "done"


def test_a_failed_try_frees_the_claim_and_counts_the_tries(state):
    # Given a try by a that failed
    key = claim_key("g", "h", str(uuid.uuid4()))
    state.claim(key, "a", 30)
    state.failed(key, "a", "RuntimeError: boom")
    # When b claims it, and a (no longer the holder) reports a failure again
    second = state.claim(key, "b", 30)
    state.failed(key, "a", "late report")
    third = state.claim(key, "c", 30)
    # Then b runs try 2 at once, and a's late report did not free b's claim
    assert (second.status, second.tries) == ("run", 2)
    assert third.status == "busy"


def test_a_dead_holders_lease_runs_out_and_the_next_claim_runs_it(state):
    # Given a holder that died: its lease is short and it never renews
    key = claim_key("g", "h", str(uuid.uuid4()))
    state.claim(key, "dead", 0.05)
    assert not state.renew(key, "someone-else", 30)
    # When another process claims after the lease ran out
    time.sleep(0.2)
    claim = state.claim(key, "b", 30)
    # Then it runs the event as try 2
    assert (claim.status, claim.tries) == ("run", 2)
    assert state.renew(key, "b", 30)


def test_dead_lettering_records_the_letter_once_and_finishes_the_claim(state):
    # Given a claim whose handler gave up
    event_id = str(uuid.uuid4())
    key = claim_key("g", "h", event_id)
    state.claim(key, "a", 30)
    letter = {
        "event_id": event_id, "event_type": "analysis.completed", "handler": "h",
        "group": "g", "error": "RuntimeError: boom", "tries": "3", "failed_at": "now",
        "envelope": "{}",
    }  # fmt: skip
    # When it is dead-lettered twice (a redelivery after a crash)
    assert state.dead(key, letter) is True
    assert state.dead(key, letter) is False
    # Then one letter holds the event, handler, error and tries; the claim is finished
    [found] = state.dead_letters(10)
    assert (found.event_id, found.handler, found.error, found.tries) == (
        event_id, "h", "RuntimeError: boom", 3,
    )  # fmt: skip
    assert state.dead_letter_count() == 1
    assert state.claim(key, "b", 30).status == "dead"
    # And a replay forgets the dead claim (only a dead one) and drops the letter
    assert state.revive(key) is True and state.revive(key) is False
    assert (state.claim(key, "b", 30).status, state.revive(key)) == ("run", False)
    assert state.drop_dead_letter(found.id) is True
    assert state.dead_letter_count() == 0


# --- handler processes -------------------------------------------------------------------


def test_the_same_event_delivered_to_two_processes_is_handled_once(bus):
    # Given an event, and process a busy handling it (the sample waits for a go), with a
    # lease of 1 s that a renews while its handler runs
    bus.extra["EVENTS_HANDLER_LEASE"] = "1"
    event = analysis()
    bus.publish(event)
    a = bus.start("--only", "slow-counter", "--consumer", "a", "--timeout", "4")
    started = f"sample:started:{event.event_id}"
    wait_until(lambda: bus.count(started) == 1, 60, "a started the event")
    # When the same event is published again and process b of the group receives it
    bus.publish(event)
    b = bus.start("--only", "slow-counter", "--consumer", "b", "--timeout", "4")
    wait_until(lambda: bus.pending("slow-counter", "b") == 1, 60, "b received the copy")
    time.sleep(3)  # three leases: b would have taken the event over, were it not renewed
    assert bus.count(started) == 1
    bus.redis.set("sample:release", 1)
    done_a, done_b = bus.finish(a), bus.finish(b)
    # Then it ran once, in a; b waited for a's outcome and skipped it; both acknowledged
    assert bus.count(f"sample:count:{event.event_id}") == 1
    assert bus.count(started) == 1
    assert done_a["handlers"]["slow-counter"] == {"handled": 1}
    assert done_b["handlers"]["slow-counter"] == {"duplicate": 1}
    assert bus.pending("slow-counter") == 0


def test_a_failing_handler_dead_letters_after_its_tries_and_the_others_flow(bus):
    # Given events for a handler that always fails (3 tries) and one that works
    events = [analysis(f"h{i}") for i in range(4)]
    bus.publish(*events)
    # When one process runs both
    summary = bus.run("--only", "always-fails", "--only", "counter", "--timeout", "3")
    # Then the healthy handler handled each event once
    assert all(bus.count(f"sample:healthy:{e.event_id}") == 1 for e in events)
    assert summary["handlers"]["counter"] == {"handled": 4}
    # And each event was tried 3 times by the failing one, then dead-lettered with the error
    assert all(bus.count(f"sample:fails:{e.event_id}") == 3 for e in events)
    assert summary["handlers"]["always-fails"] == {"retried": 8, "dead_lettered": 4}
    listed = subprocess.run(
        [sys.executable, "-m", "redundancy", "events", "dead-letters", "--handler",
         "always-fails"],
        env=bus.env(), capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(x["event_id"] for x in letters) == sorted(str(e.event_id) for e in events)
    assert all(x["tries"] == 3 and "always fails" in x["error"] for x in letters)
    assert all(json.loads(x["envelope"])["event_id"] == x["event_id"] for x in letters)
    assert all(x["group"] == "crd-handlers" for x in letters)
    # And nothing is left unacknowledged; a second run finds nothing to do
    assert bus.pending("always-fails") == 0 and bus.pending("counter") == 0
    again = bus.run("--only", "always-fails", "--only", "counter", "--timeout", "1")
    assert again["handlers"] == {}


def test_a_replayed_dead_letter_runs_again_for_its_handler_only(bus):
    # Given an event one handler dead-lettered (a bug) and another handled
    event = analysis()
    bus.publish(event)
    first = bus.run("--only", "until-fixed", "--only", "counter", "--timeout", "3")
    assert first["handlers"]["until-fixed"] == {"retried": 1, "dead_lettered": 1}
    crd = [sys.executable, "-m", "redundancy", "events", "dead-letters"]
    listed = subprocess.run(crd, env=bus.env(), capture_output=True, text=True, check=True)
    [letter] = [json.loads(line) for line in listed.stdout.splitlines()]
    # When the bug is fixed and the dead letter replayed
    bus.redis.set("sample:fixed", 1)
    subprocess.run([*crd, "--replay", letter["id"]], env=bus.env(), capture_output=True, check=True)
    second = bus.run("--only", "until-fixed", "--only", "counter", "--timeout", "3")
    # Then the handler that gave up ran it, the other skipped it, and no letter is left
    assert bus.count(f"sample:fixed-count:{event.event_id}") == 1
    assert bus.count(f"sample:healthy:{event.event_id}") == 1
    assert second["handlers"] == {"until-fixed": {"handled": 1}, "counter": {"duplicate": 1}}
    again = subprocess.run(crd, env=bus.env(), capture_output=True, text=True, check=True)
    assert again.stdout == ""


def test_a_handler_killed_mid_event_handles_it_after_restart_once(bus):
    # Given a handler process in the middle of an event (short lease: 2 s)
    bus.extra["EVENTS_HANDLER_LEASE"] = "2"
    event = analysis()
    bus.publish(event)
    first = bus.start("--only", "slow-counter", "--consumer", "k1")
    started = f"sample:started:{event.event_id}"
    wait_until(lambda: bus.count(started) == 1, 60, "the handler started")
    # When it is killed (SIGKILL: no clean-up) and started again under its name
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert bus.count(f"sample:count:{event.event_id}") == 0
    bus.redis.set("sample:release", 1)
    summary = bus.run("--only", "slow-counter", "--consumer", "k1", "--timeout", "4")
    # Then the event was not lost: it ran again (try 2) to completion, once
    assert bus.count(f"sample:count:{event.event_id}") == 1
    assert bus.count(started) == 2
    assert summary["handlers"]["slow-counter"] == {"handled": 1}
    assert bus.pending("slow-counter") == 0


def test_a_handler_process_serves_its_outcome_counts_to_prometheus(bus):
    from tests.services import free_port, sample, scrape

    # Given a handler process with a metrics port, and two events
    events = [analysis("m1"), analysis("m2")]
    bus.publish(*events)
    port = free_port()
    proc = bus.start("--only", "counter", "--metrics-port", str(port), "--timeout", "4")
    wait_until(
        lambda: all(bus.count(f"sample:healthy:{e.event_id}") for e in events), 60, "handled"
    )
    # When Prometheus scrapes it, Then it counts both events as handled (the counter
    # moves right after the side effect: scraped until it shows both)
    url = f"http://127.0.0.1:{port}/metrics"

    def handled() -> float | None:
        return sample(
            scrape(url), "redundancy_event_handler_total", handler="counter", outcome="handled"
        )

    wait_until(lambda: handled() == 2, 30, "both events counted as handled")
    assert bus.finish(proc)["handlers"]["counter"] == {"handled": 2}


def test_the_webhook_notifier_posts_subscribed_events_signed(bus):
    # Given a receiver subscribed to analysis.completed only
    hooks = WebhookServer(SECRET.encode()).start()
    try:
        bus.extra.update(
            WEBHOOK_SUBSCRIPTIONS=json.dumps(
                [{"url": hooks.url, "events": ["analysis.completed"]}]
            ),
            WEBHOOK_SECRET=SECRET,
            WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
            WEBHOOK_ALLOWED_PORTS=str(hooks.port),
        )
        wanted = analysis()
        other = SimilarityCompletedEvent(
            text1_hash="a", text2_hash="b", similarity_score=0.9, is_similar=True
        )
        bus.publish(wanted, other)
        # When the notifier runs
        summary = bus.run("--only", "webhook-notifier", "--timeout", "3")
    finally:
        hooks.stop()
    # Then the subscribed event was POSTed once, with a valid Standard Webhooks signature
    [received] = hooks.received
    assert received.signature_ok
    assert received.headers["X-Webhook-Event"] == "analysis.completed"
    assert json.loads(received.body)["event_id"] == str(wanted.event_id)
    assert summary["handlers"]["webhook-notifier"] == {"handled": 2}


def test_handlers_run_on_rabbitmq_too(bus, rabbitmq_server):
    # Given the events on RabbitMQ (the group's queue declared before they are published)
    from tests.events_support import drop_rabbitmq_topic

    broker = make_broker("rabbitmq", rabbitmq_server, bus.topic)
    try:
        broker.ensure_group_sync("crd-handlers.counter", ["analysis.completed"])
    finally:
        broker.disconnect_sync()
    events = [analysis("r1"), analysis("r2")]
    try:
        bus.publish(*events, events[0], kind="rabbitmq", url=rabbitmq_server)
        # When the handler runs on RabbitMQ (claims in Redis)
        summary = bus.run(
            "--only", "counter", "--timeout", "3",
            MESSAGE_BROKER_TYPE="rabbitmq", RABBITMQ_URL=rabbitmq_server,
        )  # fmt: skip
    finally:
        drop_rabbitmq_topic(rabbitmq_server, bus.topic, ["crd-handlers.counter"])
    # Then each event was handled once, its repeat skipped
    assert [bus.count(f"sample:healthy:{e.event_id}") for e in events] == [1, 1]
    assert summary["handlers"]["counter"]["handled"] == 2


TEXT_A = (
    "The harbour authority approved the new ferry timetable on Monday, adding two evening "
    "crossings and a Sunday service that starts in early spring next year."
)
TEXT_LATE = (
    "Volunteers planted four hundred oak saplings along the river path this weekend, the "
    "third planting day organised by the town's environmental society since autumn."
)


@pytest.fixture(params=["redis", "kafka"])
def corpus_env(
    request: pytest.FixtureRequest, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bus]:
    """This process as a corpus writer that puts its events on the bus's Redis Streams;
    the corpus's event store in Redis, then in Kafka (the handler process alike)."""
    from redundancy import resources
    from redundancy.config import get_settings
    from redundancy.corpus.connection import reset_clients
    from redundancy.corpus.store import close_stores

    bus.extra["CORPUS_REDIS_URL"] = bus.url
    if request.param == "kafka":
        bus.extra.update(
            EVENT_STORE="kafka",
            KAFKA_BOOTSTRAP_SERVERS=request.getfixturevalue("kafka_server"),
            CORPUS_KAFKA_TOPIC_PREFIX=f"test-{uuid.uuid4().hex[:8]}.",
        )
    for name, value in bus.env().items():
        if is_service_setting(name):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    reset_clients()
    resources.reset()
    yield bus
    close_stores()
    reset_clients()
    resources.reset()
    get_settings.cache_clear()


def test_the_projector_handler_brings_a_corpus_left_behind_up_to_date(corpus_env):
    from redundancy.core.corpus import shard_of
    from redundancy.core.text import hash_normalised, normalise
    from redundancy.corpus import create_corpus, get_corpus
    from redundancy.events.models import DocumentIndexedEvent, DocumentIndexedPayload
    from redundancy.events.wire import WireMessage

    bus = corpus_env
    # Given a corpus whose commands put their events on the bus
    corpus = create_corpus("news", threshold=0.8, shards=2)
    corpus.index_documents([{"id": "a", "text": TEXT_A}])
    # And an event a writer stored and published, then died before projecting it (the
    # Kafka store's produce-then-project; on the Redis store, appended behind its back)
    late = DocumentIndexedEvent(
        payload=DocumentIndexedPayload(
            corpus="news",
            doc_id="late",
            text=TEXT_LATE,
            content_hash=hash_normalised(normalise(TEXT_LATE)),
        )
    )
    shard = shard_of("late", 2)
    message = WireMessage.of(late, (KEY.encode(),))
    if corpus.store.appends_with_apply:
        bus.redis.xadd(keys.corpus_events("news", shard), message.fields())
    else:
        corpus.store.append(corpus.config, shard, [message])
    bus.publish(late)
    assert get_corpus("news").stats()["lagging_shards"] == [shard]
    assert get_corpus("news").find_similar(TEXT_LATE).matches == []
    # When the projector handler runs
    summary = bus.run("--only", "corpus-projector", "--timeout", "3")
    # Then the shard left behind is up to date and the stored document is found
    assert get_corpus("news").stats()["lagging_shards"] == []
    [match] = get_corpus("news").find_similar(TEXT_LATE).matches
    assert (match.id, match.score) == ("late", 1.0)
    assert [m.id for m in get_corpus("news").find_similar(TEXT_A).matches] == ["a"]
    # (a's document.indexed came through the outbox and relay: two events handled)
    assert summary["handlers"]["corpus-projector"] == {"handled": 2}


def test_the_readme_handler_runs_as_written(bus, tmp_path):
    import re

    from redundancy.events.models import (
        DuplicateDetectedEvent,
        DuplicateDetectedPayload,
        DuplicateMatch,
    )

    # Given the README's handler module, as a user would save it
    readme = (ROOT / "README.md").read_text()
    [code] = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "alert_editors" in b]
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "my_handlers.py").write_text(code)
    # When a duplicate.detected event is published and the handler runs
    event = DuplicateDetectedEvent(
        payload=DuplicateDetectedPayload(
            corpus="news", doc_id="late", content_hash="c", threshold=0.8,
            matches=[DuplicateMatch(id="a", score=0.93)], action="indexed",
        )
    )  # fmt: skip
    bus.publish(event)
    proc = bus.start(
        "--module", "my_handlers", "--only", "alert_editors", "--timeout", "3",
        PYTHONPATH=f"{ROOT}{os.pathsep}{folder}",
    )  # fmt: skip
    out, _ = proc.communicate(timeout=120)
    # Then it printed its line, and was handled once
    assert proc.returncode == 0, bus.logs()
    lines = out.decode().splitlines()
    assert "late in news matches ['a'] (indexed)" in lines
    assert json.loads(lines[-1])["handlers"]["alert_editors"] == {"handled": 1}
