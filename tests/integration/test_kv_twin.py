"""The in-memory twin answers exactly as Redis does: one table, run on both.

Each case runs the same set-up commands, then one Lua script (through its Python twin
on ``MemoryStore``) or one command, then the same reads, against real Redis and against
the twin; the replies must be equal. Timestamps from the server's clock are compared
as seconds from the moment the case started, TTLs in whole seconds. Every Lua script of
the package must have a twin and a case here (the last test), so a script cannot change
without its twin being checked against the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from redundancy.api import limits as api_limits
from redundancy.cache import core as cache_core
from redundancy.kv.clients import Connector
from redundancy.kv.memory import SCRIPT_TWINS, MemoryStore
from redundancy.kv.ops import RunScript, Script, SyncBackend
from redundancy.sessions import core as session_core
from tests.services import REDIS_CACHE_DB, flush_db, redis_url

pytestmark = pytest.mark.integration

S, J, U, V, L = "twin:s", "twin:j", "twin:u", "twin:v", "twin:lock"
R, Q, K, KI, JOB, KJ = "twin:r", "twin:q", "twin:k", "twin:ki", "twin:job", "twin:kj"
NOW_WINDOW_MS = 10 * 86_400_000
"""An integer this close to the case's start (ms) is a timestamp from the server clock."""


@dataclass(frozen=True)
class Case:
    name: str
    call: RunScript | tuple[Any, ...]
    setup: tuple[tuple[Any, ...] | RunScript, ...] = ()
    reads: tuple[tuple[Any, ...], ...] = ()

    def __str__(self) -> str:
        return self.name


def script(s: Script, keys: tuple[Any, ...], *args: Any) -> RunScript:
    return RunScript(s, keys, args)


def session(bind: str = "0", ip: str = "10.0.0.1", ttl: int = 60, life: int = 3600) -> tuple:
    """Set-up: a session created by the server's own script (so both sides hold the same)."""
    return ("CREATE", ("u1", ip, bind, ttl, life, "d:theme", '"dark"'))


LIVE_KEY = (("HSET", K, "key_id", "kid", "user_id", "ana"),)


def admit_args(documents: int = 0, mode: str = "digest", job: bool = False) -> tuple:
    """ADMIT's ARGV: 1 request per 10 s, burst 1, 5 documents and 100 bytes a day."""
    args: tuple = ("10000.0", 1, documents, 10 * documents, 5, 100, mode, "kid")
    if job:
        args += ("j1", "analysis", "2026-01-01T00:00:00+00:00", documents, 60_000, 3, "sam")
    return args


SESSION_READS = (("HGETALL", S), ("PTTL", S), ("ZRANGEBYSCORE", U, "-inf", "+inf"), ("PTTL", U))

CASES = [
    # --- the cache's compute-once lock ---
    Case(
        "get_or_lock: a stored value is a hit",
        script(cache_core.GET_OR_LOCK, (V, L), "tok", 5000),
        setup=(("SET", V, b'{"a":1}'),),
        reads=(("EXISTS", L),),
    ),
    Case(
        "get_or_lock: a miss takes the free lock",
        script(cache_core.GET_OR_LOCK, (V, L), "tok", 5000),
        reads=(("GET", L), ("PTTL", L)),
    ),
    Case(
        "get_or_lock: a miss waits for a held lock",
        script(cache_core.GET_OR_LOCK, (V, L), "tok", 5000),
        setup=(("SET", L, "other", "PX", 9000),),
        reads=(("GET", L), ("PTTL", L)),
    ),
    Case(
        "store_and_unlock: stores and releases our lock",
        script(cache_core.STORE_AND_UNLOCK, (V, L), b"[1]", 7000, "tok"),
        setup=(("SET", L, "tok", "PX", 9000),),
        reads=(("GET", V), ("PTTL", V), ("EXISTS", L)),
    ),
    Case(
        "store_and_unlock: a failed factory only releases",
        script(cache_core.STORE_AND_UNLOCK, (V, L), b"", 7000, "tok"),
        setup=(("SET", L, "tok", "PX", 9000),),
        reads=(("EXISTS", V), ("EXISTS", L)),
    ),
    Case(
        "store_and_unlock: a lock taken by another is kept",
        script(cache_core.STORE_AND_UNLOCK, (V, L), b"[1]", 7000, "tok"),
        setup=(("SET", L, "other", "PX", 9000),),
        reads=(("GET", V), ("GET", L)),
    ),
    # --- sessions ---
    Case(
        "session create: facts, data, TTLs and the user's index",
        script(session_core.CREATE, (S, U), "sid", "u1", "10.0.0.1", "1", 60, 3600, "d:x", "1"),
        reads=SESSION_READS,
    ),
    Case(
        "session create: the idle TTL is capped by the lifetime",
        script(session_core.CREATE, (S, U), "sid", "u1", "", "0", 7200, 30),
        reads=SESSION_READS,
    ),
    Case(
        "session get: absent",
        script(session_core.GET, (S, J), "10.0.0.1", "1"),
    ),
    Case(
        "session get: another IP is refused when bound",
        script(session_core.GET, (S, J), "10.0.0.2", "1"),
        setup=(session(bind="1"),),
        reads=SESSION_READS,
    ),
    Case(
        "session get: without refresh nothing changes",
        script(session_core.GET, (S, J), "10.0.0.2", "0"),
        setup=(session(), ("PEXPIRE", S, 5000)),
        reads=SESSION_READS,
    ),
    Case(
        "session get: a refresh extends the session and its jobs",
        script(session_core.GET, (S, J), "10.0.0.1", "1"),
        setup=(session(bind="1"), ("PEXPIRE", S, 5000), ("RPUSH", J, "t1")),
        reads=(*SESSION_READS, ("PTTL", J)),
    ),
    Case(
        "session get: past its lifetime it is deleted",
        script(session_core.GET, (S, J), "10.0.0.1", "1"),
        setup=(session(), ("HSET", S, "m:max_until", 1000), ("RPUSH", J, "t1")),
        reads=(("EXISTS", S), ("EXISTS", J)),
    ),
    Case(
        "session update: absent",
        script(session_core.UPDATE, (S, J), "", "d:theme", '"light"'),
        reads=(("EXISTS", S),),
    ),
    Case(
        "session update: merges and refreshes",
        script(session_core.UPDATE, (S, J), "", "d:theme", '"light"', "d:lang", '"fr"'),
        setup=(session(), ("PEXPIRE", S, 5000)),
        reads=SESSION_READS,
    ),
    Case(
        "session update: past its lifetime it is deleted",
        script(session_core.UPDATE, (S, J), "", "d:theme", '"light"'),
        setup=(session(), ("HSET", S, "m:max_until", 1000)),
        reads=(("EXISTS", S),),
    ),
    Case(
        "session add_job: appends, keeps the newest, follows the session's TTL",
        script(session_core.ADD_JOB, (S, J), "", "t4", 3),
        setup=(session(), ("RPUSH", J, "t1", "t2", "t3")),
        reads=(("LRANGE", J, 0, -1), ("PTTL", J)),
    ),
    Case(
        "session add_job: no session, no job",
        script(session_core.ADD_JOB, (S, J), "", "t1", 3),
        reads=(("EXISTS", J),),
    ),
    Case(
        "session add_job: a key without TTL is not a session",
        script(session_core.ADD_JOB, (S, J), "", "t1", 3),
        setup=(("HSET", S, "m:user_id", "u1"),),
        reads=(("EXISTS", J),),
    ),
    Case(
        "session update: another IP is refused when bound, nothing changes",
        script(session_core.UPDATE, (S, J), "10.0.0.2", "d:theme", '"light"'),
        setup=(session(bind="1"), ("PEXPIRE", S, 5000)),
        reads=SESSION_READS,
    ),
    Case(
        "session update: the bound IP may",
        script(session_core.UPDATE, (S, J), "10.0.0.1", "d:theme", '"light"'),
        setup=(session(bind="1"),),
        reads=SESSION_READS,
    ),
    Case(
        "session add_job: another IP is refused when bound",
        script(session_core.ADD_JOB, (S, J), "10.0.0.2", "t1", 3),
        setup=(session(bind="1"),),
        reads=(("EXISTS", J),),
    ),
    # --- the API's admission and quota ---
    Case(
        "admit: an unknown key charges nothing",
        script(api_limits.ADMIT, (R, Q, K), *admit_args(documents=1)),
        reads=(("EXISTS", R), ("EXISTS", Q)),
    ),
    Case(
        "admit: a session's revoked key charges nothing",
        script(api_limits.ADMIT, (R, Q, K), *admit_args(mode="id")),
        reads=(("EXISTS", R),),
    ),
    Case(
        "admit: a key whose digest names another id is unknown",
        script(api_limits.ADMIT, (R, Q, K), *admit_args()),
        setup=(("HSET", K, "key_id", "other", "user_id", "ana"),),
        reads=(("EXISTS", R),),
    ),
    Case(
        "admit: a live key is charged its request and documents, and the job recorded",
        script(api_limits.ADMIT, (R, Q, K, JOB, KJ), *admit_args(documents=2, job=True)),
        setup=(*LIVE_KEY, ("RPUSH", KJ, "older")),
        reads=(
            ("PTTL", R),
            ("HMGET", Q, "documents", "bytes"),
            ("HGETALL", JOB),
            ("PTTL", JOB),
            ("LRANGE", KJ, 0, -1),
            ("PTTL", KJ),
        ),
    ),
    Case(
        "admit: a session's live key records the job under the session's user",
        script(api_limits.ADMIT, (R, Q, KI, JOB, KJ), *admit_args(mode="id", job=True)),
        setup=(("SET", KI, "digest"),),
        reads=(("HGETALL", JOB), ("LRANGE", KJ, 0, -1)),
    ),
    Case(
        "admit: over the rate, refused with when it would pass, nothing charged",
        script(api_limits.ADMIT, (R, Q, K), *admit_args(documents=1)),
        setup=(*LIVE_KEY, script(api_limits.ADMIT, (R, Q, K), *admit_args(documents=1))),
        reads=(("HMGET", Q, "documents"),),
    ),
    Case(
        "admit: over the daily documents, refused whole",
        script(api_limits.ADMIT, (R, Q, K), *admit_args(documents=6)),
        setup=LIVE_KEY,
        reads=(("EXISTS", R), ("EXISTS", Q)),
    ),
    Case(
        "quota: charges, and a refund never goes below zero",
        script(api_limits.QUOTA, (Q,), 0, 0, -3, -30, 5, 100),
        setup=(script(api_limits.QUOTA, (Q,), 0, 0, 2, 20, 5, 100),),
        reads=(("HMGET", Q, "documents", "bytes"),),
    ),
    Case(
        "quota: over the bytes, refused",
        script(api_limits.QUOTA, (Q,), 0, 0, 1, 200, 5, 100),
        reads=(("EXISTS", Q),),
    ),
    Case("HMGET", ("HMGET", S, "a", "missing", "b"), setup=(("HSET", S, "a", "1", "b", "2"),)),
    # --- the commands the flows send directly ---
    Case("SET NX on a new key", ("SET", V, "1", "NX", "PX", 4000), reads=(("PTTL", V),)),
    Case("SET NX on an existing key", ("SET", V, "2", "NX"), setup=(("SET", V, "1"),)),
    Case("SET XX on a missing key", ("SET", V, "1", "XX"), reads=(("EXISTS", V),)),
    Case(
        "SET drops the old TTL",
        ("SET", V, "2"),
        setup=(("SET", V, "1", "PX", 4000),),
        reads=(("PTTL", V),),
    ),
    Case("HINCRBY", ("HINCRBY", V, "f", 5), setup=(("HSET", V, "f", 2),)),
    Case(
        "ZREMRANGEBYSCORE empties and deletes the set",
        ("ZREMRANGEBYSCORE", U, "-inf", 20),
        setup=(("ZADD", U, 10, "a", 20, "b"),),
        reads=(("EXISTS", U),),
    ),
    Case(
        "LTRIM with negative indexes",
        ("LTRIM", J, -2, -1),
        setup=(("RPUSH", J, "a", "b", "c"),),
        reads=(("LRANGE", J, 0, -1),),
    ),
    Case(
        "UNLINK counts only existing keys",
        ("UNLINK", V, S, U),
        setup=(("SET", V, "1"), ("HSET", S, "f", "1")),
    ),
    Case(
        "PEXPIRE on a missing key",
        ("PEXPIRE", V, 1000),
        reads=(("PTTL", V),),
    ),
    Case(
        "a wrong type is an error on both",
        ("GET", S),
        setup=(("HSET", S, "f", "1"),),
    ),
]


@pytest.fixture
def redis_backend(redis_server: str) -> Iterator[Callable[[], SyncBackend]]:
    url = redis_url(REDIS_CACHE_DB)
    connector = Connector(url)

    def fresh() -> SyncBackend:
        flush_db(url)
        return connector.sync()

    yield fresh
    connector.close()


def run(backend: SyncBackend, case: Case) -> list[Any]:
    """Set up, call and read on ``backend``; every reply normalised (module docstring)."""
    for command in case.setup:
        if isinstance(command, RunScript):  # a state only a script can make
            backend.script(command.script, command.keys, command.args)
        elif command[0] == "CREATE":  # a session made by the script under test
            backend.script(session_core.CREATE, (S, U), ("sid", *command[1]))
        else:
            backend.execute(command)
    sec, usec = backend.execute(("TIME",))
    started = int(sec) * 1000 + int(usec) // 1000
    try:
        if isinstance(case.call, RunScript):
            reply = backend.script(case.call.script, case.call.keys, case.call.args)
        else:
            reply = backend.execute(case.call)
    except Exception as exc:  # both sides must fail alike (the message is Redis's own)
        reply = ("error", str(exc).split()[0])
    replies = [normalise(reply, started)]
    for read in case.reads:
        value = backend.execute(read)
        replies.append(seconds(value) if read[0] == "PTTL" else normalise(value, started))
    return replies


def seconds(pttl: int) -> int:
    return pttl if pttl < 0 else round(pttl / 1000)


def normalise(value: Any, started: int) -> Any:
    if isinstance(value, list | tuple):
        return [normalise(v, started) for v in value]
    if isinstance(value, dict):
        return {normalise(k, started): normalise(v, started) for k, v in value.items()}
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes | int) and not isinstance(value, bool):
        try:
            number = int(value)
        except ValueError:
            return value
        if abs(number - started) < NOW_WINDOW_MS:
            return f"start{round((number - started) / 1000):+d}s"
    return value


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_twin_answers_as_redis_does(case: Case, redis_backend):
    # Given the same keys on real Redis and on a fresh twin
    # When the same script or command and the same reads run on both
    on_redis = run(redis_backend(), case)
    on_twin = run(MemoryStore(), case)
    # Then every reply is the same
    assert on_twin == on_redis


def test_every_lua_script_has_a_twin_and_a_case():
    # Given every Script of the modules that define Lua for the kv layer
    scripts = {
        obj.name
        for module in (cache_core, session_core, api_limits)
        for obj in vars(module).values()
        if isinstance(obj, Script)
    }
    # Then each has a Python twin and at least one case in the table above
    assert scripts and scripts == set(SCRIPT_TWINS)
    assert scripts == {c.call.script.name for c in CASES if isinstance(c.call, RunScript)}


def test_timestamps_are_compared_relative_to_the_start():
    # Given a reply holding a server timestamp a minute after the case started
    started = int(time.time() * 1000)
    # Then it is compared as an offset, and other numbers as they are
    assert normalise([str(started + 60_000).encode(), b"3600", 7], started) == [
        "start+60s",
        b"3600",
        7,
    ]
