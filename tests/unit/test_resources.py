"""``redundancy.resources``: the one place Redis clients are made, their timeouts by
role, the embedded default's choice of stores, the after-fork policy and ``reset``.
No server is needed: redis-py clients connect on their first command."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from redundancy import resources
from redundancy.config import get_settings
from redundancy.resources import Role

SRC = Path(resources.__file__).parent
CLIENT_BUILDING = re.compile(
    r"\bRedis\(|\.from_url\(|\.from_pool\(|ConnectionPool|register_at_fork"
)


def test_no_module_but_resources_builds_a_redis_client_or_a_fork_hook():
    # Given every module of the package
    found = {
        str(path.relative_to(SRC)): CLIENT_BUILDING.findall(path.read_text())
        for path in SRC.rglob("*.py")
    }
    # Then only redundancy/resources.py makes clients, pools or fork hooks ...
    elsewhere = {path: hits for path, hits in found.items() if hits and path != "resources.py"}
    assert elsewhere == {}
    # ... and it does (the pattern matches what it is meant to find)
    assert set(found["resources.py"]) >= {".from_url(", ".from_pool(", "ConnectionPool"}


def test_each_role_takes_its_timeouts_from_the_settings(settings_env):
    # Given timeouts set for every role
    settings_env(
        CACHE_SOCKET_TIMEOUT="0.7",
        REDIS_SOCKET_TIMEOUT="12",
        REDIS_CONNECT_TIMEOUT="3",
        EVENTS_PUBLISH_TIMEOUT="9",
    )
    url = "redis://127.0.0.1:1/0"
    # When clients are made for each role (and one with its own reply timeout)
    made = {
        role: resources.redis_client(url, role).connection_pool.connection_kwargs for role in Role
    }
    own = resources.redis_client(url, Role.JOBS, timeout=2).connection_pool.connection_kwargs
    # Then each has its role's reply and connect timeouts, never connecting slower than
    # a reply, and one retry
    timeouts = {r: (k["socket_timeout"], k["socket_connect_timeout"]) for r, k in made.items()}
    assert timeouts == {Role.CACHE: (0.7, 0.7), Role.JOBS: (12, 3), Role.EVENTS: (9, 3)}
    assert (own["socket_timeout"], own["socket_connect_timeout"]) == (2, 2)
    assert {k["retry"].get_retries() for k in made.values()} == {1}


def test_the_async_client_follows_the_same_table(settings_env):
    settings_env(CACHE_SOCKET_TIMEOUT="0.4")
    kwargs = resources.async_redis_client(
        "redis://127.0.0.1:1/0", Role.CACHE, max_connections=7
    ).connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.4, 0.4)
    assert kwargs["retry"].get_retries() == 1


def test_the_in_process_url_has_no_redis_client():
    with pytest.raises(ValueError, match="in-process stand-in"):
        resources.redis_client("memory://", Role.CACHE)


def test_the_embedded_default_keeps_job_data_in_process_even_with_redis_configured(settings_env):
    from redundancy.batch.store import MemoryJobStore, get_job_store
    from redundancy.events.outbox import MemoryOutbox, get_outbox

    # Given no Celery broker (the embedded default), though REDIS_URL is set
    settings_env(REDIS_URL="redis://127.0.0.1:1/0")
    # Then the job store and the outbox are this process's stand-ins
    assert resources.jobs_client() is None
    assert isinstance(get_job_store(), MemoryJobStore)
    assert isinstance(get_outbox(), MemoryOutbox)


def test_a_cluster_shares_one_client_between_the_job_store_and_the_outbox(settings_env):
    from redundancy.batch.store import RedisJobStore, get_job_store
    from redundancy.events.outbox import RedisOutbox, get_outbox

    # Given a Redis broker (its result backend holds the job data)
    settings_env(CELERY_BROKER_URL="redis://127.0.0.1:1/3")
    store, outbox = get_job_store(), get_outbox()
    # Then both are on Redis, through one client of that database with the jobs' timeouts
    assert isinstance(store, RedisJobStore) and isinstance(outbox, RedisOutbox)
    client = resources.jobs_client()
    assert store._redis is client and outbox._redis is client
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["socket_timeout"]) == (3, get_settings().redis_socket_timeout)


def test_stores_take_an_injected_client():
    from redundancy.batch.store import RedisJobStore
    from redundancy.events.brokers.redis_streams import RedisStreamBroker
    from redundancy.events.outbox import RedisOutbox
    from redundancy.kv.lease import RedisLease

    client = resources.redis_client("redis://127.0.0.1:1/0", Role.JOBS)
    assert RedisOutbox(client=client)._redis is client
    assert RedisJobStore(client)._redis is client
    assert RedisLease(client, "k", 1.0).client is client
    broker = RedisStreamBroker("redis://127.0.0.1:1/0", client=client)
    assert broker._client()._client is client


def test_reset_and_forget_make_the_next_use_build_anew():
    from redundancy.cache import get_cache, reset_cache
    from redundancy.sessions import get_session_manager

    # Given the process's cache and session manager
    cache, sessions = get_cache(), get_session_manager()
    assert get_cache() is cache
    # When the cache alone is forgotten, then everything
    reset_cache()
    assert get_cache() is not cache and get_session_manager() is sessions
    resources.reset()
    # Then each next use builds a new one
    assert get_session_manager() is not sessions


def test_a_forked_child_forgets_the_parents_instances_without_closing_them():
    # Given a shared instance in the parent
    class Resource:
        closed = False

        def close(self) -> None:
            self.closed = True

    parent = resources.shared("test:resource", Resource)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a prefork pool process, in effect
        child = resources.shared("test:resource", Resource)
        ok = resources.built("test:resource") is child and child is not parent
        os.write(write, b"1" if ok and not parent.closed else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    # Then the child built its own, and neither side's instance was closed or replaced
    assert answer == b"1"
    assert resources.shared("test:resource", Resource) is parent and not parent.closed
    resources.forget("test:resource")
