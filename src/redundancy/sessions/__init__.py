"""Stateless sessions in Redis: any process on any host serves any caller.

    from redundancy.sessions import get_session_manager
    sessions = get_session_manager()
    session = await sessions.create_session(user_id="u1", ip_address="203.0.113.7", ttl=3600)
    sid = session.session_id
    session = await sessions.get_session(sid, ip_address="203.0.113.7")  # Session | None
    await sessions.update_session(sid, {"theme": "dark"})                # merge, atomic
    await sessions.add_job(sid, task_id); await sessions.list_jobs(sid)  # "my jobs"
    await sessions.list_sessions("u1"); await sessions.revoke_all_sessions("u1")
    await sessions.delete_session(sid)

Ids are 256 random bits from ``secrets``; every session has a TTL (its idle timeout,
at most ``SESSION_MAX_TTL``), extended by each ``get_session``/``update_session``
(sliding refresh) but never past ``SESSION_MAX_LIFETIME`` after creation. With IP
binding (``SESSION_BIND_IP`` or ``bind_ip=True``) every operation on the session
(``get``, ``update``, ``delete``, ``add_job``, ``list_jobs``) from another IP -- or
without one -- raises ``SessionRefusedError``. Sessions live in ``REDIS_URL``;
without it, in an in-memory twin (the embedded default, one process). A store that does
not answer raises ``SessionStoreUnavailableError``: sessions guard access, so they
never fail open. ``SessionManager`` is async (the original API); ``.sync`` is the
blocking face over the same code.
"""

from __future__ import annotations

from typing import Any, TypeVar

from redis.exceptions import RedisError

from redundancy import resources
from redundancy.kv.clients import Connector
from redundancy.kv.ops import Flow, run_async, run_sync
from redundancy.sessions.core import (
    Session,
    SessionCore,
    SessionError,
    SessionRefusedError,
    SessionStoreUnavailableError,
)

T = TypeVar("T")


def _unavailable(connector: Connector, exc: Exception) -> SessionStoreUnavailableError:
    return SessionStoreUnavailableError(
        f"sessions store {connector.describe()} failed: {type(exc).__name__}: {exc}"
    )


class _Face:
    def __init__(
        self,
        redis_url: str | None = None,
        *,
        default_ttl: int | None = None,
        max_ttl: int | None = None,
        max_lifetime: int | None = None,
        bind_ip: bool | None = None,
        max_jobs: int | None = None,
        max_connections: int | None = None,
        socket_timeout: float | None = None,
        connector: Connector | None = None,
        _shared: tuple[SessionCore, Connector] | None = None,
    ) -> None:
        if _shared is not None:
            self.core, self.connector = _shared
            return
        from redundancy.config import get_settings

        s = get_settings()
        self.connector = connector or Connector(
            redis_url or s.sessions_url,
            max_connections=max_connections or s.cache_max_connections,
            socket_timeout=socket_timeout,
        )
        max_lifetime = max_lifetime or s.session_max_lifetime
        max_ttl = max_ttl or min(s.session_max_ttl, max_lifetime)
        self.core = SessionCore(  # unset limits follow the ones given, within the settings
            default_ttl=default_ttl or min(s.session_default_ttl, max_ttl),
            max_ttl=max_ttl,
            max_lifetime=max_lifetime,
            bind_ip=s.session_bind_ip if bind_ip is None else bind_ip,
            max_jobs=max_jobs or s.session_max_jobs,
        )

    @property
    def url(self) -> str:
        return self.connector.describe()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class SessionManager(_Face):
    """Async session manager (see the module docstring)."""

    async def _run(self, flow: Flow[T]) -> T:
        try:
            return await run_async(flow, self.connector.async_())
        except (RedisError, OSError) as exc:
            raise _unavailable(self.connector, exc) from exc

    async def create_session(
        self,
        user_id: str,
        ip_address: str | None = None,
        ttl: int | None = None,
        *,
        data: dict[str, Any] | None = None,
        bind_ip: bool | None = None,
    ) -> Session:
        """A new session (``.session_id``). ``ttl``: idle timeout (s), default
        ``SESSION_DEFAULT_TTL``."""
        return await self._run(self.core.create(user_id, ip_address, ttl, data, bind_ip))

    async def get_session(
        self, session_id: str, ip_address: str | None = None, *, refresh: bool = True
    ) -> Session | None:
        return await self._run(self.core.get(session_id, ip_address, refresh))

    async def update_session(
        self, session_id: str, data: dict[str, Any], ip_address: str | None = None
    ) -> bool:
        """Merge ``data`` into the session's data; False when the session is gone."""
        return await self._run(self.core.update(session_id, data, ip_address))

    async def delete_session(self, session_id: str, ip_address: str | None = None) -> bool:
        return await self._run(self.core.delete(session_id, ip_address))

    async def add_job(self, session_id: str, job_id: str, ip_address: str | None = None) -> bool:
        """Record a job submitted in this session (the newest SESSION_MAX_JOBS are kept)."""
        return await self._run(self.core.add_job(session_id, job_id, ip_address))

    async def list_jobs(self, session_id: str, ip_address: str | None = None) -> list[str]:
        return await self._run(self.core.list_jobs(session_id, ip_address))

    async def list_sessions(self, user_id: str) -> list[Session]:
        return await self._run(self.core.list_sessions(user_id))

    async def revoke_all_sessions(self, user_id: str) -> int:
        """End every session of ``user_id`` (log out everywhere); returns how many."""
        return await self._run(self.core.revoke_all(user_id))

    async def close(self) -> None:
        await self.connector.aclose()

    @property
    def sync(self) -> SyncSessionManager:
        return SyncSessionManager(_shared=(self.core, self.connector))


class SyncSessionManager(_Face):
    """The blocking face of ``SessionManager``: same methods, same store."""

    def _run(self, flow: Flow[T]) -> T:
        try:
            return run_sync(flow, self.connector.sync())
        except (RedisError, OSError) as exc:
            raise _unavailable(self.connector, exc) from exc

    def create_session(
        self,
        user_id: str,
        ip_address: str | None = None,
        ttl: int | None = None,
        *,
        data: dict[str, Any] | None = None,
        bind_ip: bool | None = None,
    ) -> Session:
        return self._run(self.core.create(user_id, ip_address, ttl, data, bind_ip))

    def get_session(
        self, session_id: str, ip_address: str | None = None, *, refresh: bool = True
    ) -> Session | None:
        return self._run(self.core.get(session_id, ip_address, refresh))

    def update_session(
        self, session_id: str, data: dict[str, Any], ip_address: str | None = None
    ) -> bool:
        return self._run(self.core.update(session_id, data, ip_address))

    def delete_session(self, session_id: str, ip_address: str | None = None) -> bool:
        return self._run(self.core.delete(session_id, ip_address))

    def add_job(self, session_id: str, job_id: str, ip_address: str | None = None) -> bool:
        return self._run(self.core.add_job(session_id, job_id, ip_address))

    def list_jobs(self, session_id: str, ip_address: str | None = None) -> list[str]:
        return self._run(self.core.list_jobs(session_id, ip_address))

    def list_sessions(self, user_id: str) -> list[Session]:
        return self._run(self.core.list_sessions(user_id))

    def revoke_all_sessions(self, user_id: str) -> int:
        return self._run(self.core.revoke_all(user_id))

    def close(self) -> None:
        self.connector.close()


def get_session_manager() -> SessionManager:
    """The process's session manager from the settings (``.sync`` for the blocking face),
    made on first use and again in a forked child (``redundancy.resources``)."""
    return resources.shared("sessions", SessionManager)


def reset_session_manager() -> None:
    """Forget the process's manager (tests; after a settings change)."""
    resources.forget("sessions")


__all__ = [
    "Session",
    "SessionError",
    "SessionManager",
    "SessionRefusedError",
    "SessionStoreUnavailableError",
    "SyncSessionManager",
    "get_session_manager",
    "reset_session_manager",
]
