"""The gateway's Redis: API keys, rate limits, quotas and job owners.

They live beside the sessions (``REDIS_URL``), on the sessions' connector, so every API
instance and ``crd keys`` read the same state and revocation is seen by the next request
anywhere. Nothing here caches an answer in the process.
"""

from __future__ import annotations

from typing import TypeVar

from redis.exceptions import RedisError

from redundancy.errors import InfrastructureError
from redundancy.kv import Connector, Flow, run_async, run_sync

T = TypeVar("T")


class ApiStoreUnavailableError(InfrastructureError):
    """The gateway's Redis did not answer (auth and limits fail closed: 503)."""


def api_connector() -> Connector:
    """The connector of the sessions store (``REDIS_URL``): one pool per process."""
    from redundancy.sessions import get_session_manager

    return get_session_manager().connector


async def run(flow: Flow[T], connector: Connector | None = None) -> T:
    connector = connector or api_connector()
    try:
        return await run_async(flow, connector.async_())
    except (RedisError, OSError) as exc:
        raise ApiStoreUnavailableError(
            f"API store {connector.describe()} failed: {type(exc).__name__}: {exc}"
        ) from exc


def run_blocking(flow: Flow[T], connector: Connector | None = None) -> T:
    connector = connector or api_connector()
    try:
        return run_sync(flow, connector.sync())
    except (RedisError, OSError) as exc:
        raise ApiStoreUnavailableError(
            f"API store {connector.describe()} failed: {type(exc).__name__}: {exc}"
        ) from exc
