"""The message guard on real brokers: malformed and foreign-serializer task messages,
published with kombu onto the real queues, are rejected, recorded and dead-lettered
while the worker keeps serving good tasks (on main, the first one stops the worker)."""

from __future__ import annotations

import json
import pickle
import time
import uuid
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Exchange, Producer, Queue

from redundancy import keys, names
from tests.services import free_port, sample, scrape

pytestmark = pytest.mark.integration

GOOD_ANALYSIS = """
    import json
    from redundancy.tasks import analyze_content
    print(json.dumps(analyze_content.delay("One. One. Two.").get(timeout=60)))
"""


def bad_messages() -> list[dict[str, Any]]:
    """One message per way a body or its headers can be wrong, each with a fresh id
    (``id`` None: a message without one). ``reason`` is what the guard must say."""
    task = names.ANALYZE_CONTENT
    good_body = [["Some text."], {}, {"callbacks": None, "errbacks": None}]
    return [
        {  # the reproduction: a JSON object, not [args, kwargs, embed]
            "reason": "malformed_body",
            "body": {"not": "a celery body"},
            "headers": {"task": task, "id": str(uuid.uuid4())},
        },
        {  # a list of the wrong length
            "reason": "malformed_body",
            "body": [["Some text."], {}],
            "headers": {"task": task, "id": str(uuid.uuid4())},
        },
        {  # kwargs not a mapping
            "reason": "malformed_body",
            "body": [["Some text."], ["not", "a", "dict"], {}],
            "headers": {"task": task, "id": str(uuid.uuid4())},
        },
        {  # a scalar body
            "reason": "malformed_body",
            "body": 42,
            "headers": {"task": task, "id": str(uuid.uuid4())},
        },
        {  # a time limit Celery's pool would fail to unpack in the main process
            "reason": "malformed_headers",
            "body": good_body,
            "headers": {"task": task, "id": str(uuid.uuid4()), "timelimit": "soon"},
        },
        {  # pickle: refused by accept_content, and now recorded too
            "reason": "refused_content",
            "raw": pickle.dumps(good_body),
            "content_type": "application/x-python-serialize",
            "headers": {"task": task, "id": str(uuid.uuid4())},
        },
        {  # YAML: refused likewise
            "reason": "refused_content",
            "raw": b"- [Some text.]\n- {}\n- {}\n",
            "content_type": "application/x-yaml",
            "headers": {"task": task, "id": str(uuid.uuid4())},
        },
        {  # JSON that does not parse
            "reason": "undecodable",
            "raw": b'[["Some text."], {}, {',
            "content_type": "application/json",
            "headers": {"task": task, "id": str(uuid.uuid4())},
        },
        {  # no id: nothing to record, still rejected and dead-lettered
            "reason": "malformed_headers",
            "body": good_body,
            "headers": {"task": task},
            "no_id": True,
        },
        {  # a Celery built-in made from our task class is guarded too
            "reason": "malformed_body",
            "body": {"not": "a celery body"},
            "headers": {"task": "celery.chord_unlock", "id": str(uuid.uuid4())},
        },
    ]


def publish(broker_url: str, messages: list[dict[str, Any]]) -> None:
    """Publish each message with kombu, as any producer with broker access could."""
    exchange = Exchange(names.ANALYSIS_QUEUE, type="direct")
    with Connection(broker_url) as conn:
        producer = Producer(conn.channel())
        for m in messages:
            options: dict[str, Any] = {
                "exchange": exchange,
                "routing_key": names.ANALYSIS_QUEUE,
                "headers": m["headers"],
            }
            if "raw" in m:
                producer.publish(
                    m["raw"], content_type=m["content_type"], content_encoding="binary", **options
                )
            else:
                producer.publish(m["body"], serializer="json", **options)


def wait_for(condition: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} not met after {timeout} s")


def results(cluster: Any) -> Celery:
    return Celery(broker=cluster.broker_url, backend=cluster.backend_url)


def check_failures_recorded(cluster: Any, messages: list[dict[str, Any]]) -> None:
    app = results(cluster)
    for m in messages:
        if m.get("no_id"):
            continue
        result = app.AsyncResult(m["headers"]["id"])
        wait_for(lambda r=result: r.state == "FAILURE", what=f"FAILURE of {m['reason']}")
        error = result.result
        assert type(error).__name__ == "MalformedMessageError"
        assert f"task message rejected ({m['reason']})" in str(error)


def run_guard_scenario(cluster: Any, **worker_env: str) -> tuple[Any, list[dict[str, Any]]]:
    # Given a worker with one pool process
    worker = cluster.start_worker(concurrency=1, **worker_env)
    # When every kind of bad message is published onto the analysis queue, then a good task
    messages = bad_messages()
    publish(cluster.broker_url, messages)
    out = cluster.producer(GOOD_ANALYSIS)
    # Then the worker served the good task after them, and is still running
    assert out["sentence_count"] == 3
    assert worker.proc.poll() is None, worker.text()
    # and each bad message with an id reads FAILURE with the reason, for its caller
    check_failures_recorded(cluster, messages)
    # and each was logged once, without a traceback
    log = worker.text()
    assert log.count("task message rejected (") == len(messages), log
    assert "Traceback" not in log and "Unrecoverable error" not in log, log
    return worker, messages


def test_redis_worker_survives_bad_messages_and_dead_letters_them(redis_cluster):
    port = free_port()
    _, messages = run_guard_scenario(redis_cluster, WORKER_METRICS_PORT=str(port))

    # Then every bad message is in the dead-letter stream, with its reason and its body
    import redis

    client = redis.Redis.from_url(redis_cluster.backend_url)
    entries = client.xrange(keys.task_dead_letters())
    assert [e[1][b"reason"].decode() for e in entries] == [m["reason"] for m in messages]
    first = entries[0][1]
    assert first[b"body"] == b'{"not": "a celery body"}'
    assert first[b"id"].decode() == messages[0]["headers"]["id"]
    assert first[b"queue"] == b"analysis"
    # and nothing is left on the queue (rejected, not requeued)
    broker = redis.Redis.from_url(redis_cluster.broker_url)
    assert broker.llen("analysis") == 0
    assert not broker.hlen("unacked")
    # and the rejections are counted by reason
    samples = wait_for(
        lambda: (
            (s := scrape(f"http://127.0.0.1:{port}/metrics"))
            and sample(s, "redundancy_messages_rejected_total", reason="malformed_body") == 5
            and s
        ),
        what="rejections counted",
    )
    for reason, count in (("malformed_headers", 2), ("refused_content", 2), ("undecodable", 1)):
        assert sample(samples, "redundancy_messages_rejected_total", reason=reason) == count


def dead_letter_count(broker_url: str) -> int:
    with Connection(broker_url) as conn:
        queue = Queue(names.DEAD_LETTER_QUEUE, Exchange(names.DEAD_LETTER_EXCHANGE, "fanout"))
        declared = queue(conn.channel()).queue_declare(passive=True)
        return int(declared.message_count)


def test_rabbitmq_worker_survives_bad_messages_and_dead_letters_them(rabbitmq_cluster):
    _, messages = run_guard_scenario(rabbitmq_cluster)

    # Then RabbitMQ dead-lettered every one of them to the dead-letter queue
    assert wait_for(
        lambda: dead_letter_count(rabbitmq_cluster.broker_url) == len(messages),
        what="dead letters",
    )
    with Connection(rabbitmq_cluster.broker_url) as conn:
        channel = conn.channel()
        first = channel.basic_get(names.DEAD_LETTER_QUEUE, no_ack=True)
        assert json.loads(first.body) == {"not": "a celery body"}
        assert first.headers["id"] == messages[0]["headers"]["id"]
        death = first.headers["x-death"][0]
        assert death["queue"] == "analysis" and death["reason"] == "rejected"


def declare_queues_as_an_older_version(broker_url: str) -> None:
    """The task queues as versions before the dead-letter argument declared them."""
    from tests.services import purge_queues

    purge_queues(broker_url)
    with Connection(broker_url) as conn:
        for name in names.QUEUES:
            Queue(name, Exchange(name, type="direct"), routing_key=name)(conn.channel()).declare()


def vhost_of(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def test_rabbitmq_queues_of_an_older_version_stop_crd_worker_with_the_upgrade_path(
    rabbitmq_cluster,
):
    # Given task queues declared without the dead-letter argument (an older version)
    declare_queues_as_an_older_version(rabbitmq_cluster.broker_url)
    # When crd worker starts with this version's defaults
    out = rabbitmq_cluster.crd("worker", "--concurrency=1", timeout=120)
    # Then it stops at once with a configuration error that says how to upgrade
    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join((out.stdout + out.stderr).split())
    assert "was declared without the dead-letter exchange" in text
    assert "TASK_QUEUE_DEAD_LETTERING=false" in text and "rabbitmqctl set_policy" in text
    assert "Traceback" not in text


def test_rabbitmq_queues_of_an_older_version_dead_letter_by_policy(rabbitmq_cluster):
    import shutil
    import subprocess

    from tests.services import require

    rabbitmqctl = shutil.which("rabbitmqctl")
    require(rabbitmqctl is not None, "rabbitmqctl (to set a policy)")
    vhost = vhost_of(rabbitmq_cluster.broker_url)
    policy = f"crd-test-dead-letter-{uuid.uuid4().hex[:8]}"
    # Given queues of an older version, kept: the argument turned off and the README's policy
    declare_queues_as_an_older_version(rabbitmq_cluster.broker_url)
    subprocess.run(
        [rabbitmqctl, "set_policy", "-p", vhost, policy, "^(analysis|similarity|batch)$",
         json.dumps({"dead-letter-exchange": names.DEAD_LETTER_EXCHANGE}),
         "--apply-to", "queues"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:
        worker = rabbitmq_cluster.start_worker(concurrency=1, TASK_QUEUE_DEAD_LETTERING="false")
        # When a malformed message arrives, then a good task
        message = bad_messages()[0]
        publish(rabbitmq_cluster.broker_url, [message])
        out = rabbitmq_cluster.producer(GOOD_ANALYSIS, TASK_QUEUE_DEAD_LETTERING="false")
        # Then the worker served the good one and the policy dead-lettered the bad one
        assert out["sentence_count"] == 3 and worker.proc.poll() is None
        assert wait_for(
            lambda: dead_letter_count(rabbitmq_cluster.broker_url) == 1, what="dead letter"
        )
        check_failures_recorded(rabbitmq_cluster, [message])
    finally:
        subprocess.run(
            [rabbitmqctl, "clear_policy", "-p", vhost, policy], capture_output=True, timeout=60
        )


def not_envelopes(task_id: str, tag_id: str) -> list[bytes]:
    """Entries written straight into the Redis broker's list, below kombu: each is not a
    kombu envelope in its own way (the last two name task ids, to be recorded)."""
    info = {"exchange": "analysis", "routing_key": "analysis"}
    headers = {"task": names.ANALYZE_CONTENT, "id": task_id}
    return [
        b"garbage",
        b"\xff\xfe\x00 not utf-8",
        b"[1, 2, 3]",
        b'"a string"',
        b"42",
        b"{}",
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the JSON parser recurses
        json.dumps({"body": "", "properties": ["not", "a", "dict"]}).encode(),
        json.dumps(  # a body that is not base64
            {
                "body": "!!!notbase64",
                "content-type": "application/json",
                "content-encoding": "utf-8",
                "headers": headers,
                "properties": {
                    "delivery_tag": "t1",
                    "body_encoding": "base64",
                    "delivery_info": info,
                },
            }
        ).encode(),
        json.dumps(  # no delivery_info: kombu could not track it as unacknowledged
            {
                "body": "W1tdLCB7fSwge31d",
                "content-type": "application/json",
                "content-encoding": "utf-8",
                "headers": {"task": names.ANALYZE_CONTENT, "id": tag_id},
                "properties": {"delivery_tag": "t2", "body_encoding": "base64"},
            }
        ).encode(),
    ]


def test_redis_worker_survives_entries_that_are_not_kombu_envelopes(redis_cluster):
    import redis

    port = free_port()
    # Given a worker with one pool process on a Redis broker
    worker = redis_cluster.start_worker(concurrency=1, WORKER_METRICS_PORT=str(port))
    first_id, second_id = str(uuid.uuid4()), str(uuid.uuid4())
    entries = not_envelopes(first_id, second_id)
    # When entries that are not task envelopes are pushed onto the queue's list directly
    broker = redis.Redis.from_url(redis_cluster.broker_url)
    for entry in entries:
        broker.lpush(names.ANALYSIS_QUEUE, entry)
    # Then the worker still serves a good task after them, and is still running
    out = redis_cluster.producer(GOOD_ANALYSIS)
    assert out["sentence_count"] == 3
    assert worker.proc.poll() is None, worker.text()
    # and every entry is in the dead-letter stream (the last two by their task ids)
    client = redis.Redis.from_url(redis_cluster.backend_url)
    dead = wait_for(
        lambda: (d := client.xrange(keys.task_dead_letters())) and len(d) == len(entries) and d,
        what="every entry dead-lettered",
    )
    assert {e[1][b"reason"] for e in dead} == {b"malformed_envelope"}
    assert dead[0][1][b"body"] == b"garbage"
    assert [e[1][b"id"].decode() for e in dead][-2:] == [first_id, second_id]
    # and the two that name a task id read FAILURE for their callers
    app = results(redis_cluster)
    for task_id in (first_id, second_id):
        result = app.AsyncResult(task_id)
        wait_for(lambda r=result: r.state == "FAILURE", what="FAILURE recorded")
        assert "task message rejected (malformed_envelope)" in str(result.result)
    # and nothing is left on the list or unacknowledged; each was counted and logged once
    assert broker.llen(names.ANALYSIS_QUEUE) == 0 and not broker.hlen("unacked")
    assert wait_for(
        lambda: (
            sample(
                scrape(f"http://127.0.0.1:{port}/metrics"),
                "redundancy_messages_rejected_total",
                reason="malformed_envelope",
            )
            == len(entries)
        ),
        what="rejections counted",
    )
    log = worker.text()
    assert log.count("task message rejected (malformed_envelope)") == len(entries), log
    assert "Traceback" not in log and "Unrecoverable error" not in log, log
