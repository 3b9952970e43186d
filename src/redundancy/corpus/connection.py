"""The corpus's Redis: one client per process, a single server or a Redis Cluster.

``corpus_client`` gets this process's client from the project's one client factory
(``redundancy.resources``, with the job data's timeouts: an apply script of a large
chunk can take a while on a busy server). A cluster is recognised by asking the server
(``INFO cluster``), so the same ``CORPUS_REDIS_URL`` form serves both. Scripts run by
SHA; a server that lost them (restart, failover) gets them again and the call is retried.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from redundancy import resources
from redundancy.corpus.scripts import SCRIPTS
from redundancy.errors import ConfigurationError
from redundancy.kv.ops import Script

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
    """This process's client for ``url`` (default: ``corpus_url()``), built by the one
    client factory (``redundancy.resources``: the job data's timeouts, one retry, a new
    client after a fork) on first use."""
    target = corpus_url(url)
    name = f"redis:corpus:{target}"
    _names.add(name)
    return resources.shared(name, lambda: _with_scripts(target))


def _with_scripts(url: str) -> CorpusRedis:
    client, cluster = resources.cluster_aware_client(url, resources.Role.JOBS)
    return CorpusRedis(client, cluster)


_names: set[str] = set()


def reset_clients() -> None:
    """Forget every client (tests; a process that changed its settings)."""
    for name in list(_names):
        client = resources.built(name)
        if client is not None:
            with contextlib.suppress(Exception):  # closing a dead client
                client.close()
        resources.forget(name)
