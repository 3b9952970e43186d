"""The per-task hot path on real Redis: how many round trips a task costs, and the result
backend that stores each state in one (``redundancy.workers.results``).

Each test runs a fresh producer process that traces tasks the way a pool process does
(Celery's ``build_tracer``: STARTED state, the task, the result, the signals), with
every Redis round trip counted where redis-py sends it (``send_packed_command``: one
call per command or pipeline).
"""

from __future__ import annotations

import pytest

from redundancy.workers.base import RESULT_REPR_CHARS
from tests.services import REDIS_CACHE_DB, flush_db, redis_url

pytestmark = pytest.mark.integration


@pytest.fixture
def cache_url(redis_cluster) -> str:
    """The cache's (and event streams') test database, flushed: every first text misses."""
    url = redis_url(REDIS_CACHE_DB)
    flush_db(url)
    return url


TRACE = """
    import json, sys, time, uuid
    import redis
    from redis.connection import AbstractConnection
    import redundancy.cache.core
    redundancy.cache.core.STATS_FLUSH_INTERVAL = 1e9  # statistics: ~1 trip a second, not per task
    from celery.app.trace import build_tracer
    from redundancy import keys
    from redundancy.workers import app
    from redundancy.tasks import analyze_content

    trips = waits = 0  # requests sent; times the process waited for replies in turn
    reading = False
    send = AbstractConnection.send_packed_command
    def counted(self, *args, **kwargs):
        global trips, waits, reading
        trips += 1
        if reading or trips == 1:  # a request after a reply was read starts a new wait
            waits, reading = waits + 1, False
        return send(self, *args, **kwargs)
    AbstractConnection.send_packed_command = counted
    read = AbstractConnection.read_response
    def read_counted(self, *args, **kwargs):
        global reading
        reading = True
        return read(self, *args, **kwargs)
    AbstractConnection.read_response = read_counted

    tracer = build_tracer(analyze_content.name, analyze_content, app=app, eager=False)
    def run(text, task_id=None, redelivered=False):
        global trips
        task_id = task_id or str(uuid.uuid4())
        request = {
            "id": task_id, "task": analyze_content.name, "hostname": "probe@host",
            "retries": 0, "root_id": task_id, "is_eager": False,
            "delivery_info": {"routing_key": "analysis", "redelivered": redelivered},
        }
        global shown, reading, last_waits
        before, waited, reading = trips, waits, True
        traced = tracer(task_id, (text,), {}, request)
        last_waits = waits - waited
        if traced.info is None:
            shown = traced.retstr  # the result as the log line and task event show it
            return task_id, trips - before, "SUCCESS"
        return task_id, trips - before, f"{traced.info.state} {type(traced.info.retval).__name__}"
    backend = redis.Redis.from_url(app.conf.result_backend)
    outbox = keys.outbox()
"""


@pytest.mark.parametrize(
    ("where", "requests"),
    [("the result backend's server", (2, 2)), ("a server of its own", (4, 3))],
)
def test_analyze_content_waits_for_two_round_trips_on_a_miss_and_on_a_hit(
    redis_cluster, cache_url, where, requests, request
):
    # Given a traced worker process, warmed up (connections made, scripts loaded), whose
    # results cache is on the result backend's Redis server (another database) or on one
    # of its own
    if where == "a server of its own":
        cache_url = request.getfixturevalue("private_redis").url
    out = redis_cluster.producer(
        TRACE
        + """
    run("Warm up the connections. Warm up the connections.")
    miss_id, miss, miss_state = run("The tide came in. The tide came in again. Gulls argued.")
    miss_waits = last_waits
    hit_id, hit, hit_state = run("The tide came in. The tide came in again. Gulls argued.")
    hit_waits = last_waits
    from redundancy.cache.client import get_cache
    cache_stats = get_cache().stats()
    print(json.dumps({
        "miss": miss, "hit": hit, "states": [miss_state, hit_state], "shown": shown,
        "waits": [miss_waits, hit_waits], "cache": cache_stats,
        "events": backend.xlen(outbox),
        "deliveries": [backend.get(keys.delivery_counter(i, 0)) and
                       int(backend.get(keys.delivery_counter(i, 0))) for i in (miss_id, hit_id)],
        "stored": [json.loads(backend.get("celery-task-meta-" + i))["status"]
                   for i in (miss_id, hit_id)],
    }))
    """,
        REDIS_URL=cache_url,
        MESSAGE_BROKER_TYPE="redis_streams",
    )
    # When a text is analysed for the first time (a cache miss), then again (a hit)
    # Then on the backend's server the cache's requests (lookup with the STARTED state and
    # its delivery count, store with the result and its event) go in the backend's own
    # writes: 2 requests either way; on a server of its own they are requests of their
    # own, 4 on a miss and 3 on a hit (no store)
    assert out["states"] == ["SUCCESS", "SUCCESS"]
    assert (out["miss"], out["hit"]) == requests
    # and the process waits for two round trips either way: a separate request goes out
    # with the backend's (lookup with STARTED, store with SUCCESS) and is read after it
    assert out["waits"] == [2, 2]
    assert (out["cache"]["hits"], out["cache"]["misses"], out["cache"]["sets"]) == (1, 2, 2)
    # and nothing was left out to save them: results, events, delivery counts are there
    assert out["stored"] == ["SUCCESS", "SUCCESS"]
    assert out["events"] == 3  # the warm-up's, the miss's and the hit's, once each
    assert out["deliveries"] == [1, 1]
    # and the result's text form, which Celery builds for every task, is its JSON cut
    # short, showing the hash and the score
    assert out["shown"].startswith('{"content_hash":"') and '"redundancy_score":' in out["shown"]
    assert len(out["shown"]) == RESULT_REPR_CHARS + len("...")


def test_the_cache_rides_in_its_own_database_and_survives_a_server_without_the_scripts(
    redis_cluster, cache_url
):
    # Given a traced worker process whose cache is another database of the result
    # backend's server, and a server that forgot every script (a restart, SCRIPT FLUSH)
    out = redis_cluster.producer(
        TRACE
        + f"""
    run("Warm up the connections. Warm up the connections.")
    cache = redis.Redis.from_url({cache_url!r})
    cache.script_flush()
    _, _, first = run("Frost on the glass. Frost on the glass. A kettle sang.")
    _, _, second = run("Frost on the glass. Frost on the glass. A kettle sang.")
    from redundancy.cache.client import get_cache
    print(json.dumps({{
        "states": [first, second], "stats": get_cache().stats(),
        "cache_entries": len([k for k in cache.scan_iter("*analysis*") if b"lock" not in k]),
        "backend_entries": len(list(backend.scan_iter("*analysis*"))),
        "locks": len(list(cache.scan_iter("*lock*"))) + len(list(backend.scan_iter("*lock*"))),
        "results": len(list(backend.scan_iter("celery-task-meta-*"))),
    }}))
    """,
        REDIS_URL=cache_url,
        MESSAGE_BROKER_TYPE="redis_streams",
    )
    # When a text misses (the scripts are loaded again on the way), then hits
    # Then both succeed, the entries are in the cache's database and none in the
    # backend's, no lock is left, and every result is in the backend's database (its
    # connection went back to its own database after each ride)
    assert out["states"] == ["SUCCESS", "SUCCESS"]
    assert (out["stats"]["misses"], out["stats"]["hits"]) == (2, 1)
    assert out["cache_entries"] == 2  # the warm-up's and the text's
    assert out["backend_entries"] == 0 and out["locks"] == 0
    assert out["results"] == 3


def test_a_cache_store_whose_write_failed_is_written_after_and_its_lock_released(
    redis_cluster, cache_url
):
    # Given a traced task whose SUCCESS write (carrying the cache's store and unlock) is
    # cut once on the way -- Celery's backend then stores the result again, alone
    out = redis_cluster.producer(
        TRACE
        + f"""
    import redis.client
    from redundancy.cache.core import STORE_AND_UNLOCK
    from redundancy.cache.overlap import cache_client
    run("Warm up the connections. Warm up the connections.")
    store_sha = cache_client().script_sha(STORE_AND_UNLOCK).encode()
    execute, cut = redis.client.Pipeline.execute, []
    def cut_once(self, *args, **kwargs):
        carries = any(store_sha in [a if isinstance(a, bytes) else str(a).encode()
                                    for a in c[0]] for c in self.command_stack)
        if carries and not cut:
            cut.append(1)
            self.reset()
            raise redis.exceptions.ConnectionError("cut on the way")
        return execute(self, *args, **kwargs)
    redis.client.Pipeline.execute = cut_once
    cache = redis.Redis.from_url({cache_url!r})
    _, _, first = run("Snow on the hills. Snow on the hills. A dog barked.")
    locks = [k.decode() for k in cache.scan_iter("*lock*")]
    _, _, second = run("Snow on the hills. Snow on the hills. A dog barked.")
    from redundancy.cache.client import get_cache
    print(json.dumps({{"cut": len(cut), "states": [first, second], "locks": locks,
                      "stats": get_cache().stats()}}))
    """,
        REDIS_URL=cache_url,
        MESSAGE_BROKER_TYPE="redis_streams",
    )
    # When the task returns
    # Then the cut write was retried without the cache's store, which the task wrote
    # itself: no lock is left behind, and the same text next is a hit
    assert out["cut"] == 1
    assert out["states"] == ["SUCCESS", "SUCCESS"]
    assert out["locks"] == []
    assert (out["stats"]["misses"], out["stats"]["hits"]) == (2, 1)


def test_the_event_is_written_with_the_result_and_not_again_by_the_signal(redis_cluster, cache_url):
    # Given a traced task whose event goes to the outbox with its result
    out = redis_cluster.producer(
        TRACE
        + """
    from redundancy.events.signals import STORED_WITH_RESULT
    from redundancy.events.wire import WireMessage
    marks = []
    original = analyze_content.backend._store_result
    def spy(task_id, result, state, traceback=None, request=None, **kw):
        value = original(task_id, result, state, traceback, request, **kw)
        marks.append((state, getattr(request, STORED_WITH_RESULT, False)))
        return value
    analyze_content.backend._store_result = spy
    task_id, _, state = run("Lanterns swung in the rain. Nobody came. Lanterns swung in the rain!")
    [(entry_id, fields)] = backend.xrange(outbox)
    event = WireMessage.from_fields(fields).event()
    result = json.loads(backend.get("celery-task-meta-" + task_id))["result"]
    print(json.dumps({"state": state, "marks": marks, "task_id": event.task_id,
                      "type": event.event_type, "hash": event.payload.content_hash,
                      "result_hash": result["content_hash"]}))
    """,
        REDIS_URL=cache_url,
        MESSAGE_BROKER_TYPE="redis_streams",
    )
    # When it succeeds
    # Then the SUCCESS store marked the request (the handler then wrote nothing: one entry)
    assert out["state"] == "SUCCESS"
    assert out["marks"] == [["STARTED", False], ["SUCCESS", True]]
    # and the one outbox entry is the job's event, for the stored result
    assert out["type"] == "analysis.completed"
    assert out["hash"] == out["result_hash"]


def test_a_stored_success_is_never_overwritten_and_redeliveries_are_counted(
    redis_cluster, cache_url
):
    # Given a task that succeeded, and MAX_DELIVERIES=1
    out = redis_cluster.producer(
        TRACE
        + """
    task_id, _, first = run("A text that is delivered twice. A text that is delivered twice.")
    # When its message is delivered again (its worker died before the ack)
    _, _, second = run("A text that is delivered twice. A text that is delivered twice.",
                       task_id=task_id, redelivered=True)
    meta = json.loads(backend.get("celery-task-meta-" + task_id))
    print(json.dumps({"first": first, "second": second, "stored": meta["status"],
                      "deliveries": int(backend.get(keys.delivery_counter(task_id, 0)))}))
    """,
        REDIS_URL=cache_url,
        MESSAGE_BROKER_TYPE="redis_streams",
        MAX_DELIVERIES="1",
    )
    # Then the second delivery was counted with its STARTED state and refused as poison
    assert out["first"] == "SUCCESS"
    assert out["deliveries"] == 2
    assert out["second"] == "FAILURE PoisonMessageError"
    # while the stored SUCCESS was kept, as Celery's own backend keeps it
    assert out["stored"] == "SUCCESS"


def test_a_backend_apart_from_the_job_store_leaves_events_and_counts_to_the_hooks(
    redis_cluster, cache_url
):
    # Given our backend on another database than the job store's (an ops override)
    other = cache_url
    out = redis_cluster.producer(
        TRACE
        + f"""
    from celery import states
    from celery.app.task import Context
    from redundancy.events.signals import STORED_WITH_RESULT
    from redundancy.workers.deliveries import DELIVERIES_COUNTED
    from redundancy.workers.results import RedisResultBackend
    elsewhere = RedisResultBackend(app=app, url={other!r})
    request = Context(id="t-1", task=analyze_content.name, retries=0, root_id="t-1")
    result = analyze_content.run("Gulls argued over the pier. Gulls argued over the pier.")
    # When it stores a task's STARTED state and its SUCCESS
    elsewhere.store_result("t-1", {{"pid": 1}}, states.STARTED, request=request)
    elsewhere.store_result("t-1", result, states.SUCCESS, request=request)
    there = redis.Redis.from_url({other!r})
    print(json.dumps({{
        "stored": json.loads(there.get("celery-task-meta-t-1"))["status"],
        "marked": getattr(request, STORED_WITH_RESULT, False),
        "counted": getattr(request, DELIVERIES_COUNTED, None),
        "events": backend.xlen(outbox) + there.xlen(outbox),
    }}))
    """,
    )
    # Then it stores the result there but writes no event and counts no delivery: the
    # task_success handler and the delivery counter do that on the job store
    assert out == {"stored": "SUCCESS", "marked": False, "counted": None, "events": 0}


def test_an_early_lock_the_body_never_used_is_released(redis_cluster, cache_url):
    # Given a traced task whose arguments give a cache key, so its entry is looked up and
    # locked with the STARTED state, but whose body refuses the input before asking
    out = redis_cluster.producer(
        TRACE
        + f"""
    from redundancy.cache import overlap
    from redundancy.cache.client import get_cache
    cache = redis.Redis.from_url({cache_url!r})
    held = []
    finish = overlap.finish
    def spy(request):  # what after_return finds: the early lookup took the lock
        early = getattr(request, overlap.LOOKUP_ATTR, None)
        held.append([k.decode() for k in cache.scan_iter("*lock*")])
        held.append(bool(early and early.locked and not early.adopted))
        finish(request)
    overlap.finish = spy
    _, _, refused = run("   ")  # whitespace only: invalid input, failed without retry
    overlap.finish = finish
    locks = [k.decode() for k in cache.scan_iter("*lock*")]
    # and the same text analysed right after by another task is not held up by a lock
    started = time.monotonic()
    _, _, ok = run("Sails at dawn. Sails at dawn.")
    _, _, again = run("Sails at dawn. Sails at dawn.")
    print(json.dumps({{"refused": refused, "held": held, "locks": locks, "ok": ok, "again": again,
                      "seconds": time.monotonic() - started, "stats": get_cache().stats()}}))
    """,
        REDIS_URL=cache_url,
        MESSAGE_BROKER_TYPE="redis_streams",
    )
    # Then the refused task had taken the entry's lock with its STARTED state, unused, and
    # released it when it returned (after_return): none is left
    assert out["refused"] == "FAILURE EmptyTextError"
    [lock], unused = out["held"]
    assert "lock" in lock and unused is True
    assert out["locks"] == []
    # and the cache works on: a miss then a hit, no wait for a lock's timeout
    assert (out["ok"], out["again"]) == ("SUCCESS", "SUCCESS")
    assert (out["stats"]["misses"], out["stats"]["hits"], out["stats"]["sets"]) == (1, 1, 1)
    assert out["seconds"] < 30  # CACHE_LOCK_TIMEOUT is 60 s: a left lock would block


def test_a_store_the_result_backend_did_not_take_is_written_after_the_task(
    redis_cluster, cache_url
):
    # Given a traced task whose SUCCESS store does not take the cache's store along (as
    # with another result backend, or task_track_started off)
    out = redis_cluster.producer(
        TRACE
        + f"""
    from redundancy.cache import overlap
    from redundancy.cache.client import get_cache
    overlap.send_store = lambda request, via=None: None
    cache = redis.Redis.from_url({cache_url!r})
    _, miss, first = run("Rain on the roof. Rain on the roof.")
    entries = [k.decode() for k in cache.scan_iter("*analysis*") if b"lock" not in k]
    _, _, second = run("Rain on the roof. Rain on the roof.")
    print(json.dumps({{"states": [first, second], "entries": len(entries),
                      "locks": [k.decode() for k in cache.scan_iter("*lock*")],
                      "stats": get_cache().stats()}}))
    """,
        REDIS_URL=cache_url,
        MESSAGE_BROKER_TYPE="redis_streams",
    )
    # Then the task wrote the value itself when it returned (after_return), and released
    # the lock: the next task with the same text is a hit
    assert out["states"] == ["SUCCESS", "SUCCESS"]
    assert out["entries"] == 1 and out["locks"] == []
    assert (out["stats"]["misses"], out["stats"]["hits"], out["stats"]["sets"]) == (1, 1, 1)
