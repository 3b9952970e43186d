"""Per-process Redis clients with a bounded pool, for the sync and the async driver.

A ``Connector`` builds its clients lazily and again after a fork (a prefork child never
uses its parent's sockets), and one async client per event loop (a redis.asyncio
connection belongs to the loop that opened it). ``memory://`` (or no URL) selects the
in-memory twin instead.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from redundancy.kv.memory import AsyncMemoryBackend, MemoryStore
from redundancy.kv.ops import AsyncBackend, Command, Script, SyncBackend

MEMORY_URL = "memory://"
POOL_WAIT_FACTOR = 5
"""A caller waits up to this many socket timeouts for a free pooled connection."""


def sanitize(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


class RedisSyncBackend:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._scripts: dict[str, Any] = {}

    def execute(self, args: tuple[Any, ...]) -> Any:
        return self.client.execute_command(*args)

    def pipeline(self, commands: tuple[Command, ...], transaction: bool) -> list[Any]:
        pipe = self.client.pipeline(transaction=transaction)
        for command in commands:
            pipe.execute_command(*command.args)
        return pipe.execute()  # type: ignore[no-any-return]

    def script(self, script: Script, keys: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
        registered = self._scripts.get(script.name)
        if registered is None:  # redis-py's Script: EVALSHA, loading it on NOSCRIPT
            registered = self._scripts[script.name] = self.client.register_script(script.lua)
        return registered(keys=list(keys), args=list(args))


class RedisAsyncBackend:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._scripts: dict[str, Any] = {}

    async def execute(self, args: tuple[Any, ...]) -> Any:
        return await self.client.execute_command(*args)

    async def pipeline(self, commands: tuple[Command, ...], transaction: bool) -> list[Any]:
        async with self.client.pipeline(transaction=transaction) as pipe:
            for command in commands:
                pipe.execute_command(*command.args)
            return await pipe.execute()  # type: ignore[no-any-return]

    async def script(self, script: Script, keys: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
        registered = self._scripts.get(script.name)
        if registered is None:
            registered = self._scripts[script.name] = self.client.register_script(script.lua)
        return await registered(keys=list(keys), args=list(args))


class Connector:
    """Clients for one Redis URL (see the module docstring).

    ``max_connections`` bounds each process's pool (per event loop for the async
    client); a caller that finds every connection busy waits, then gets a
    ``ConnectionError``. ``socket_timeout`` bounds connecting and every reply, and a
    failed command is retried once, so a dead server costs milliseconds, not minutes.
    """

    def __init__(
        self,
        url: str | None,
        *,
        max_connections: int = 50,
        socket_timeout: float = 1.0,
        memory: MemoryStore | None = None,
    ) -> None:
        self.url = url or MEMORY_URL
        self.max_connections = max_connections
        self.socket_timeout = socket_timeout
        self.memory = (memory or MemoryStore()) if self.is_memory else None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._sync: SyncBackend | None = None
        self._async: weakref.WeakKeyDictionary[Any, AsyncBackend] = weakref.WeakKeyDictionary()

    @property
    def is_memory(self) -> bool:
        return self.url.startswith(MEMORY_URL)

    def describe(self) -> str:
        return "in-memory (this process only)" if self.is_memory else sanitize(self.url)

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # forked: drop the parent's clients, never close them
            self._pid = os.getpid()
            self._sync = None
            self._async = weakref.WeakKeyDictionary()

    def _options(self) -> dict[str, Any]:
        return {
            "max_connections": self.max_connections,
            "timeout": self.socket_timeout * POOL_WAIT_FACTOR,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_timeout,
            "health_check_interval": 30,
        }

    def sync(self) -> SyncBackend:
        """This process's blocking backend."""
        self._check_fork()
        backend = self._sync
        if backend is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self._make_sync()
                backend = self._sync
        return backend

    def _make_sync(self) -> SyncBackend:
        if self.memory is not None:
            return self.memory
        import redis
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=1)
        pool = redis.BlockingConnectionPool.from_url(self.url, retry=retry, **self._options())
        return RedisSyncBackend(redis.Redis(connection_pool=pool))

    def async_(self) -> AsyncBackend:
        """The backend for the running event loop."""
        import asyncio

        self._check_fork()
        loop = asyncio.get_running_loop()
        backend = self._async.get(loop)
        if backend is None:
            backend = self._async[loop] = self._make_async()
        return backend

    def _make_async(self) -> AsyncBackend:
        if self.memory is not None:
            return AsyncMemoryBackend(self.memory)
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialWithJitterBackoff

        retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=1)
        pool = aioredis.BlockingConnectionPool.from_url(self.url, retry=retry, **self._options())
        return RedisAsyncBackend(aioredis.Redis(connection_pool=pool))

    def close(self) -> None:
        """Close this process's blocking client (the async ones: ``aclose``)."""
        backend, self._sync = self._sync, None
        if isinstance(backend, RedisSyncBackend):
            backend.client.close()
            backend.client.connection_pool.disconnect()

    async def aclose(self) -> None:
        """Close the running loop's async client."""
        import asyncio

        backend = self._async.pop(asyncio.get_running_loop(), None)
        if isinstance(backend, RedisAsyncBackend):
            await backend.client.aclose()
            await backend.client.connection_pool.disconnect()
