"""Per-process Redis clients with a bounded pool, for the sync and the async driver.

A ``Connector`` builds its clients lazily (with ``redundancy.resources``, the one place
clients are made) and again after a fork (a prefork child never uses its parent's
sockets), and one async client per event loop (a redis.asyncio connection belongs to
the loop that opened it). ``memory://`` (or no URL) selects the in-memory twin instead.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from redundancy import resources
from redundancy.kv.memory import AsyncMemoryBackend, MemoryStore
from redundancy.kv.ops import AsyncBackend, Command, Script, SyncBackend
from redundancy.resources import MEMORY_URL, Role

SAME_SERVER_KEYS = ("host", "port", "path", "username", "password", "ssl_ca_certs",
                    "decode_responses", "encoding", "protocol")  # fmt: skip
"""Connection arguments that must agree for two pools to reach one server alike."""

POOL_WAIT_FACTOR = 5
"""A caller waits up to this many socket timeouts for a free pooled connection."""


def sanitize(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


class RedisSyncBackend:
    """Bounded by ``max_connections`` tokens in a ``queue.SimpleQueue`` (C code, ~0.2 us)
    over redis-py's plain pool; its blocking pool does the same for ~3 us a
    command, a tenth of a cache hit. A caller waits ``wait`` seconds for a token, then
    gets a ConnectionError, as from a blocking pool."""

    def __init__(self, client: Any, max_connections: int, wait: float) -> None:
        self.client = client
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(max_connections):
            self._tokens.put(None)
        self._wait = wait
        self._scripts: dict[str, Any] = {}
        self._same_server: tuple[Any, int | None] | None = None
        """The last pool ``same_server`` was asked about, and its answer."""

    def _acquire(self) -> None:
        try:
            self._tokens.get(timeout=self._wait)
        except queue.Empty:
            from redis.exceptions import ConnectionError as RedisConnectionError

            raise RedisConnectionError(
                f"no free connection in the pool after {self._wait:g} s"
            ) from None

    def execute(self, args: tuple[Any, ...]) -> Any:
        self._acquire()
        try:
            return self.client.execute_command(*args)
        finally:
            self._tokens.put(None)

    def pipeline(self, commands: tuple[Command, ...], transaction: bool) -> list[Any]:
        pipe = self.client.pipeline(transaction=transaction)
        for command in commands:
            pipe.execute_command(*command.args)
        self._acquire()
        try:
            return pipe.execute()  # type: ignore[no-any-return]
        finally:
            self._tokens.put(None)

    def _registered(self, script: Script) -> Any:
        registered = self._scripts.get(script.name)
        if registered is None:  # redis-py's Script: EVALSHA, loading it on NOSCRIPT
            registered = self._scripts[script.name] = self.client.register_script(script.lua)
        return registered

    def script_sha(self, script: Script) -> str:
        """The SHA1 ``EVALSHA`` names ``script`` by (for a request sent on another client)."""
        return str(self._registered(script).sha)

    def same_server(self, pool: Any) -> int | None:
        """This client's database number when ``pool`` (another client's connection pool)
        reaches the same Redis server the same way -- host, port or socket, credentials,
        TLS, reply decoding -- so a request of ours may travel on its connections after a
        ``SELECT``; else None. Asked twice per task about the same pool: answered once."""
        known = self._same_server
        if known is not None and known[0] is pool:
            return known[1]
        mine = getattr(self.client, "connection_pool", None)  # none on a cluster client
        same = (
            mine is not None
            and pool is not None
            and mine.connection_class is pool.connection_class
            and all(
                (mine.connection_kwargs.get(k) or None) == (pool.connection_kwargs.get(k) or None)
                for k in SAME_SERVER_KEYS  # unset, None and False alike
            )
        )
        db = int(mine.connection_kwargs.get("db") or 0) if same and mine is not None else None
        self._same_server = (pool, db)
        return db

    def script(self, script: Script, keys: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
        registered = self._registered(script)
        self._acquire()
        try:
            return registered(keys=list(keys), args=list(args))
        finally:
            self._tokens.put(None)

    def send_script(
        self, script: Script, keys: tuple[Any, ...], args: tuple[Any, ...]
    ) -> Callable[[], Any]:
        """Put ``script`` on the wire now and return the function that reads its reply (call
        it exactly once), so the caller's other round trip runs meanwhile: two requests
        waited for together. The reply raises NoScriptError while the server lacks the
        script (``script`` loads it). The connection is held until the reply is read."""
        sha = self._registered(script).sha
        self._acquire()
        pool = self.client.connection_pool
        try:
            conn = pool.get_connection()
        except BaseException:
            self._tokens.put(None)
            raise
        try:
            conn.send_command("EVALSHA", sha, len(keys), *keys, *args)
        except BaseException:
            self._give_back(pool, conn, broken=True)
            raise

        def reply() -> Any:
            broken = True
            try:
                value = conn.read_response()
                broken = False
                return value
            except ResponseError:  # the server answered (NOSCRIPT ...): the connection is fine
                broken = False
                raise
            finally:
                self._give_back(pool, conn, broken)

        return reply

    def _give_back(self, pool: Any, conn: Any, broken: bool) -> None:
        if broken:
            conn.disconnect()  # a reply may still be on its way: never reuse the socket
        pool.release(conn)
        self._tokens.put(None)


class RedisAsyncBackend:
    """Bounded by a semaphore (callers wait for a free connection) over redis.asyncio's
    plain pool: its blocking pool costs ~15 us per command, the semaphore ~1 us."""

    def __init__(self, client: Any, max_connections: int) -> None:
        import asyncio

        self.client = client
        self._limit = asyncio.Semaphore(max_connections)
        self._scripts: dict[str, Any] = {}

    async def execute(self, args: tuple[Any, ...]) -> Any:
        async with self._limit:
            return await self.client.execute_command(*args)

    async def pipeline(self, commands: tuple[Command, ...], transaction: bool) -> list[Any]:
        async with self._limit, self.client.pipeline(transaction=transaction) as pipe:
            for command in commands:
                pipe.execute_command(*command.args)
            return await pipe.execute()  # type: ignore[no-any-return]

    async def script(self, script: Script, keys: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
        registered = self._scripts.get(script.name)
        if registered is None:
            registered = self._scripts[script.name] = self.client.register_script(script.lua)
        async with self._limit:
            return await registered(keys=list(keys), args=list(args))


class Connector:
    """Clients for one Redis URL (see the module docstring).

    ``max_connections`` bounds each process's pool (per event loop for the async
    client); a caller that finds every connection busy waits (the sync face up to five
    socket timeouts, then a ``ConnectionError``). ``socket_timeout`` bounds connecting
    and every reply, and a failed command is retried once, so a dead server costs
    milliseconds, not minutes.
    """

    def __init__(
        self,
        url: str | None,
        *,
        max_connections: int = 50,
        socket_timeout: float | None = None,
        memory: MemoryStore | None = None,
    ) -> None:
        self.url = url or MEMORY_URL
        self.max_connections = max_connections
        self.socket_timeout = resources.timeouts(Role.CACHE, socket_timeout).reply
        self.memory = (memory or MemoryStore()) if self.is_memory else None
        self._after_fork()
        resources.reset_after_fork(self)

    @property
    def is_memory(self) -> bool:
        return resources.is_memory(self.url)

    def describe(self) -> str:
        return "in-memory (this process only)" if self.is_memory else sanitize(self.url)

    def _after_fork(self) -> None:
        """New process: forget the parent's clients (never close its sockets)."""
        self._lock = threading.Lock()
        self._sync: SyncBackend | None = None
        self._async: weakref.WeakKeyDictionary[Any, AsyncBackend] = weakref.WeakKeyDictionary()

    def sync(self) -> SyncBackend:
        """This process's blocking backend."""
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
        client = resources.redis_client(
            self.url,
            Role.CACHE,
            timeout=self.socket_timeout,
            max_connections=self.max_connections,
        )
        wait = self.socket_timeout * POOL_WAIT_FACTOR
        return RedisSyncBackend(client, self.max_connections, wait)

    def async_(self) -> AsyncBackend:
        """The backend for the running event loop."""
        import asyncio

        loop = asyncio.get_running_loop()
        backend = self._async.get(loop)
        if backend is None:
            backend = self._async[loop] = self._make_async()
        return backend

    def _make_async(self) -> AsyncBackend:
        if self.memory is not None:
            return AsyncMemoryBackend(self.memory)
        client = resources.async_redis_client(
            self.url,
            Role.CACHE,
            timeout=self.socket_timeout,
            max_connections=self.max_connections,
        )
        return RedisAsyncBackend(client, self.max_connections)

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
