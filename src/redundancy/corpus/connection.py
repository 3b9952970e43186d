"""The corpus's Redis: one client per process, a single server or a Redis Cluster.

``corpus_client`` is the one place a corpus Redis client is built (the project's client
factory takes its place when it exists). A cluster is recognised by asking the server
(``INFO cluster``), so the same ``CORPUS_REDIS_URL`` form serves both. Scripts run by
SHA; a server that lost them (restart, failover) gets them again and the call is retried.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from typing import Any

from redundancy.corpus.scripts import SCRIPTS
from redundancy.errors import ConfigurationError
from redundancy.kv.ops import Script

SOCKET_TIMEOUT = 10.0
"""Seconds to connect and to wait for a reply: an apply script of a large chunk or a
whole feature table can take a while on a busy server."""

ScriptCall = tuple[Script, str, Sequence[Any]]
"""A script, its one key (the shard prefix), its arguments."""


class CorpusRedis:
    """A Redis or RedisCluster client with the corpus scripts loaded."""

    def __init__(self, client: Any, cluster: bool) -> None:
        self.client = client
        self.cluster = cluster
        self._shas: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        for script in SCRIPTS:
            self._shas[script.name] = self.client.script_load(script.lua)

    def run(self, script: Script, key: str, args: Sequence[Any]) -> Any:
        return self.run_many([(script, key, args)])[0]

    def run_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """The calls pipelined (on a cluster, one round trip per node involved)."""
        from redis.exceptions import NoScriptError

        if not calls:
            return []
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for script, key, args in calls:
                pipe.execute_command("EVALSHA", self._shas[script.name], 1, key, *args)
            try:
                return list(pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                self._load()  # the server restarted or failed over: load and run again
        raise AssertionError("unreachable")

    def pipeline(self) -> Any:
        return self.client.pipeline(transaction=False)

    def close(self) -> None:
        self.client.close()


_lock = threading.Lock()
_clients: dict[tuple[int, str], CorpusRedis] = {}


def corpus_url(url: str | None = None) -> str:
    """CORPUS_REDIS_URL, else REDIS_URL; a clear error when neither is set."""
    from redundancy.config import get_settings

    found = url or get_settings().corpus_redis
    if not found:
        raise ConfigurationError(
            "corpora live in Redis: set CORPUS_REDIS_URL (or REDIS_URL) to redis://host:port/db"
        )
    return found


def corpus_client(url: str | None = None) -> CorpusRedis:
    """This process's client for ``url`` (default: ``corpus_url()``), made on first use
    and again in a forked child (a prefork child never shares its parent's sockets)."""
    target = corpus_url(url)
    slot = (os.getpid(), target)
    found = _clients.get(slot)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(slot)
        if found is None:
            found = _clients[slot] = _connect(target)
    return found


def _connect(url: str) -> CorpusRedis:
    import redis
    from redis.cluster import RedisCluster

    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "health_check_interval": 30,
    }
    single = redis.Redis.from_url(url, **options)
    try:
        clustered = bool(single.info("cluster").get("cluster_enabled"))
    except redis.ConnectionError:
        single.close()
        raise
    if not clustered:
        return CorpusRedis(single, cluster=False)
    single.close()
    return CorpusRedis(RedisCluster.from_url(url, **options), cluster=True)


def reset_clients() -> None:
    """Forget every client (tests; a process that changed its settings)."""
    with _lock:
        for client in _clients.values():
            with contextlib.suppress(Exception):  # closing a dead client
                client.close()
        _clients.clear()
