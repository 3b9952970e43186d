"""A lease: at most one holder of a named job at a time (the outbox relay, the worker
that reports queue lengths), held while the holder renews it, lost ``ttl`` after its
last renewal -- so a holder that dies is replaced within ``ttl``.

``RedisLease`` keeps it in Redis (``SET NX PX`` with a random token; renewing and
releasing check the token in one Lua call, so a holder never extends or deletes a lease
another process took after its own expired). ``LocalLease`` is the lease of a single
process: the embedded default has one relay, so it always holds.
"""

from __future__ import annotations

import secrets
from typing import Any, Protocol

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease(Protocol):
    held: bool
    """Whether this holder held the lease at its last ``acquire``/``renew``/``hold``."""

    def acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        ...

    def renew(self) -> bool:
        """Extend the lease to a full ``ttl`` if this holder still holds it."""
        ...

    def hold(self) -> bool:
        """Take the lease or extend it: True while this holder holds it."""
        ...

    def release(self) -> None:
        """Give the lease up now (a standby takes over at once, not after ``ttl``)."""
        ...


class RedisLease:
    """The lease ``key`` in Redis (see the module docstring). ``owner`` names the holder
    in the key's value (a random token by default)."""

    def __init__(self, client: Any, key: str, ttl: float, owner: str | None = None) -> None:
        self.client, self.key = client, key
        self.owner = owner or secrets.token_hex(16)
        self.ttl_ms = max(1, round(ttl * 1000))
        self.held = False
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    def acquire(self) -> bool:
        self.held = bool(self.client.set(self.key, self.owner, nx=True, px=self.ttl_ms))
        return self.held

    def renew(self) -> bool:
        self.held = bool(self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))
        return self.held

    def hold(self) -> bool:
        return self.acquire() or self.renew()

    def release(self) -> None:
        if self.held:  # no round trip (and no error from a Redis that is down) otherwise
            self.held = False
            self._release(keys=[self.key], args=[self.owner])


class LocalLease:
    """The lease of a single process: always held."""

    held = True

    def acquire(self) -> bool:
        return True

    def renew(self) -> bool:
        return True

    def hold(self) -> bool:
        return True

    def release(self) -> None:
        pass
