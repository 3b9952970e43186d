"""Sessions on real Redis -- and the same contract on the in-memory twin."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import threading
import time
from datetime import timedelta

import pytest
import redis

from redundancy import keys
from redundancy.errors import InvalidInputError
from redundancy.sessions import (
    SessionManager,
    SessionRefusedError,
    SessionStoreUnavailableError,
    SyncSessionManager,
)
from tests.services import REDIS_CACHE_DB, flush_db, redis_url

pytestmark = pytest.mark.integration


def manager(url: str, **kw) -> SyncSessionManager:
    return SyncSessionManager(url, **kw)


def test_create_get_update_delete_round_trip(kv_url):
    sessions = manager(kv_url)
    sid = sessions.create_session(
        user_id="ana", ip_address="203.0.113.7", ttl=120, data={"theme": "dark"}
    ).session_id
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid)  # 256 bits, URL-safe
    s = sessions.get_session(sid)
    assert (s.user_id, s.ip_address, s.ttl, s.data, s.bound_ip) == (
        "ana",
        "203.0.113.7",
        120,
        {"theme": "dark"},
        False,
    )
    assert s.created_at <= s.last_seen < s.expires_at <= s.max_until
    assert sessions.update_session(sid, {"cart": [1, 2], "theme": "light"})
    assert sessions.get_session(sid).data == {"theme": "light", "cart": [1, 2]}
    assert sessions.delete_session(sid)
    assert sessions.get_session(sid) is None
    assert not sessions.update_session(sid, {"x": 1})
    assert not sessions.delete_session(sid)
    assert sessions.get_session("not-a-session-id") is None


def test_async_api_matches_the_original(kv_url):
    sessions = SessionManager(kv_url)

    async def scenario():
        sid = (
            await sessions.create_session(user_id="u1", ip_address="10.1.2.3", ttl=3600)
        ).session_id
        await sessions.update_session(sid, {"key": "value"})
        got = await sessions.get_session(sid)
        deleted = await sessions.delete_session(sid)
        await sessions.close()
        return got.data, deleted

    assert asyncio.run(scenario()) == ({"key": "value"}, True)


def test_ids_are_unique_and_ttl_limits_are_enforced(kv_url):
    sessions = manager(kv_url, max_ttl=600)
    ids = {sessions.create_session(user_id="many").session_id for _ in range(300)}
    assert len(ids) == 300
    for bad in (0, -5, 601, 1.5, True):
        with pytest.raises(InvalidInputError):
            sessions.create_session(user_id="u", ttl=bad)
    with pytest.raises(InvalidInputError):
        sessions.create_session(user_id="u", ip_address="not an ip")
    with pytest.raises(InvalidInputError):
        sessions.create_session(user_id="")


POLL = 0.1
"""Seconds between looks while waiting for the store's clock to move on."""
MAX_POLLS = 300
"""Bound on every wait loop below (30 s of polls: far beyond the TTLs they wait out)."""


def pttl(sessions: SyncSessionManager, sid: str) -> int:
    return int(sessions.connector.sync().execute(("PTTL", keys.session(sid))))


def test_ttl_expiry_and_sliding_refresh_really_happen(kv_url):
    sessions = manager(kv_url)
    idle = sessions.create_session(user_id="u", ttl=1).session_id
    used = sessions.create_session(user_id="u", ttl=2).session_id
    first = sessions.get_session(used, refresh=False)
    assert first.expires_at == first.last_seen + timedelta(seconds=2)
    # When one session is used (refreshed) until the store's clock is past the end of its
    # first idle period, while the other is left alone
    for _ in range(MAX_POLLS):
        seen = sessions.get_session(used)
        assert seen is not None, "a session in use expired"
        # each use moves the idle deadline: last use + TTL, and the key's PTTL with it
        assert seen.last_seen >= first.last_seen
        assert seen.expires_at == seen.last_seen + timedelta(seconds=2)
        assert 0 < pttl(sessions, used) <= 2000
        if seen.last_seen > first.expires_at and sessions.get_session(idle, refresh=False) is None:
            break
        time.sleep(POLL)
    else:
        pytest.fail("the store's clock never passed the first idle deadline")
    # Then the used one outlived its first deadline and the idle one is gone for good
    assert pttl(sessions, idle) == -2  # no key left behind
    # and a look without refresh does not extend it
    peek = sessions.get_session(used, refresh=False)
    assert peek.last_seen == seen.last_seen and peek.expires_at == seen.expires_at
    # When it is no longer used, it expires at its deadline
    for _ in range(MAX_POLLS):
        if sessions.get_session(used, refresh=False) is None:
            break
        time.sleep(POLL)
    else:
        pytest.fail("an unused session never expired")
    assert pttl(sessions, used) == -2


def test_sliding_refresh_stops_at_the_maximum_lifetime(kv_url):
    sessions = manager(kv_url, default_ttl=2, max_ttl=2, max_lifetime=4)
    sid = sessions.create_session(user_id="u").session_id
    created = sessions.get_session(sid, refresh=False)
    assert created.max_until == created.created_at + timedelta(seconds=4)
    # When it is used without pause, every refresh ends no later than the absolute end
    last = created
    for _ in range(MAX_POLLS):
        remaining = pttl(sessions, sid)  # read first: the session may end right after a look
        seen = sessions.get_session(sid)
        if seen is None:
            break
        assert 0 < remaining <= 2000  # the key's own expiry: never more than the idle TTL
        assert seen.max_until == created.max_until  # a refresh never moves the absolute end
        assert seen.expires_at == min(seen.last_seen + timedelta(seconds=2), created.max_until)
        last = seen
        time.sleep(POLL)
    else:
        pytest.fail("a session in constant use outlived its maximum lifetime")
    # Then it lived past its first idle deadline (refreshes worked) until the absolute end
    assert last.last_seen > created.expires_at
    assert last.expires_at == created.max_until
    assert pttl(sessions, sid) == -2


def test_an_ip_bound_session_refuses_another_ip(kv_url):
    sessions = manager(kv_url)
    bound = sessions.create_session(user_id="u", ip_address="198.51.100.4", bind_ip=True).session_id
    assert sessions.get_session(bound, ip_address="198.51.100.4").bound_ip
    with pytest.raises(SessionRefusedError):
        sessions.get_session(bound, ip_address="198.51.100.5")
    with pytest.raises(SessionRefusedError):
        sessions.get_session(bound)  # no IP presented
    assert sessions.get_session(bound, ip_address=" 198.51.100.4 ") is not None  # normalised
    free = sessions.create_session(user_id="u", ip_address="198.51.100.4").session_id
    assert sessions.get_session(free, ip_address="192.0.2.1") is not None
    on_by_setting = manager(kv_url, bind_ip=True)
    sid = on_by_setting.create_session(user_id="u", ip_address="2001:db8::1").session_id
    with pytest.raises(SessionRefusedError):
        on_by_setting.get_session(sid, ip_address="2001:db8::2")
    with pytest.raises(InvalidInputError):
        on_by_setting.create_session(user_id="u")  # binding without an IP


def test_create_session_returns_the_session_as_get_session_reads_it(kv_url):
    # Given a manager
    sessions = manager(kv_url)
    # When a session is created
    created = sessions.create_session(
        user_id="ana", ip_address="203.0.113.7", ttl=120, data={"k": [1]}
    )
    # Then the object returned is the stored session, as the original design's example reads
    read = sessions.get_session(created.session_id, refresh=False)
    assert created == read
    assert created.expires_at == created.created_at + timedelta(seconds=120)


def test_ip_binding_guards_every_operation_not_only_reads(kv_url):
    # Given a session bound to its creator's IP, with one job
    sessions = manager(kv_url)
    sid = sessions.create_session(user_id="u", ip_address="198.51.100.4", bind_ip=True).session_id
    assert sessions.add_job(sid, "j1", ip_address="198.51.100.4")
    # When another IP (or none) updates it, records or lists jobs, or deletes it
    for ip in ("198.51.100.5", None):
        with pytest.raises(SessionRefusedError):
            sessions.update_session(sid, {"x": 1}, ip_address=ip)
        with pytest.raises(SessionRefusedError):
            sessions.add_job(sid, "stolen", ip_address=ip)
        with pytest.raises(SessionRefusedError):
            sessions.list_jobs(sid, ip_address=ip)
        with pytest.raises(SessionRefusedError):
            sessions.delete_session(sid, ip_address=ip)
    # Then nothing changed, and the creator's IP may do all of it
    assert sessions.list_jobs(sid, ip_address="198.51.100.4") == ["j1"]
    assert sessions.get_session(sid, ip_address="198.51.100.4").data == {}
    assert sessions.update_session(sid, {"x": 1}, ip_address="198.51.100.4")
    assert sessions.delete_session(sid, ip_address="198.51.100.4")


def test_list_and_revoke_all_sessions_of_a_user(kv_url):
    sessions = manager(kv_url)
    mine = [
        sessions.create_session(user_id="ana", ip_address=f"10.0.0.{i}").session_id
        for i in range(3)
    ]
    other = sessions.create_session(user_id="bob").session_id
    sessions.delete_session(mine[1])
    listed = sessions.list_sessions("ana")
    assert {s.session_id for s in listed} == {mine[0], mine[2]}
    assert [s.created_at for s in listed] == sorted(s.created_at for s in listed)
    assert sessions.revoke_all_sessions("ana") == 2
    assert sessions.list_sessions("ana") == []
    assert all(sessions.get_session(sid) is None for sid in mine)
    assert sessions.get_session(other) is not None


def test_a_users_index_is_pruned_and_expires(kv_url):
    sessions = manager(kv_url, default_ttl=1, max_ttl=1, max_lifetime=2)
    sid = sessions.create_session(user_id="gone").session_id
    backend = sessions.connector.sync()
    assert 0 < backend.execute(("PTTL", keys.user_sessions("gone"))) <= 2000
    time.sleep(1.2)  # idle timeout passed; the index still names it until pruned
    assert sessions.list_sessions("gone") == []
    assert backend.execute(("ZSCORE", keys.user_sessions("gone"), sid)) is None


def test_job_ids_per_session_from_any_instance(kv_url):
    here = manager(kv_url, max_jobs=5)
    sid = here.create_session(user_id="u").session_id
    for i in range(7):
        assert here.add_job(sid, f"job-{i}")
    elsewhere = manager(kv_url) if kv_url != "memory://" else here
    assert elsewhere.list_jobs(sid) == [f"job-{i}" for i in range(2, 7)]  # newest 5 kept
    backend = here.connector.sync()
    assert 0 < backend.execute(("PTTL", keys.session_jobs(sid))) <= 3600 * 1000
    here.delete_session(sid)
    assert here.list_jobs(sid) == []
    assert not here.add_job(sid, "late")


def _hammer(url: str, sid: str, name: str, count: int, go) -> None:
    sessions = SyncSessionManager(url)
    go.wait(30)
    for i in range(count):
        assert sessions.update_session(sid, {f"{name}-{i}": i, "last": name})


def test_two_processes_updating_one_session_1000_times_each_lose_nothing(redis_server):
    url = redis_url(REDIS_CACHE_DB)
    flush_db(url)
    sid = manager(url).create_session(user_id="u", data={"start": 0}).session_id
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_hammer, args=(url, sid, name, 1000, go)) for name in "ab"]
    for p in procs:
        p.start()
    time.sleep(0.5)
    go.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    data = manager(url).get_session(sid).data
    assert len(data) == 1 + 1 + 2000
    assert all(data[f"{n}-{i}"] == i for n in "ab" for i in range(1000))
    assert data["last"] in {"a", "b"}


def test_threads_updating_one_session_lose_nothing(kv_url):
    sessions = manager(kv_url)
    sid = sessions.create_session(user_id="u").session_id
    go = threading.Event()
    threads = [
        threading.Thread(target=_hammer_thread, args=(sessions, sid, n, 200, go)) for n in "abcd"
    ]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(60)
    assert len(sessions.get_session(sid).data) == 800


def _hammer_thread(sessions, sid, name, count, go):
    go.wait(10)
    for i in range(count):
        sessions.update_session(sid, {f"{name}-{i}": i})


def test_a_stopped_store_raises_instead_of_failing_open(private_redis):
    sessions = manager(private_redis.url, socket_timeout=0.5)
    sid = sessions.create_session(user_id="u").session_id
    private_redis.stop()
    with pytest.raises(SessionStoreUnavailableError):
        sessions.get_session(sid)


def test_sessions_keys_live_under_their_own_area(redis_server):
    url = redis_url(REDIS_CACHE_DB)
    flush_db(url)
    sid = manager(url).create_session(user_id="ana").session_id
    manager(url).add_job(sid, "j1")
    stored = sorted(k.decode() for k in redis.Redis.from_url(url).scan_iter())
    assert stored == sorted([keys.session(sid), keys.session_jobs(sid), keys.user_sessions("ana")])
    assert all(k.startswith("redundancy:sessions:v1:") for k in stored)
