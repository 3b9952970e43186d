"""Who handles an event: a claim per (group, handler, event_id), shared by every process.

A claim is a Redis hash (``keys.handler_claim``) moved by one Lua script per step, so two
processes that got the same event (published twice, or redelivered) never both run it:

* ``claim``: ``run`` (this try is number ``tries``), ``busy`` (another process holds a
  live lease: wait), or ``done`` / ``dead`` (handled, or dead-lettered: skip);
* ``renew``: the holder extends its lease while its handler runs;
* ``failed``: the try raised; the lease is cleared so the next try (here or elsewhere)
  may run at once;
* ``done``: handled; remembered for EVENTS_HANDLER_DONE_TTL;
* ``dead``: the event and the error go to the dead-letter stream
  (``keys.event_dead_letters``) in the same atomic step;
* ``revive``: a dead claim is forgotten, so a replayed event runs again
  (``crd events dead-letters --replay``).

A process killed mid-handler leaves a ``running`` claim whose lease runs out; its
message was never acknowledged, so the broker hands it out again and the next claim
runs it (``tries`` counts that try too, so an event that keeps killing its handler ends
in the dead letters). The lease is read against the Redis server's clock (``TIME``).
``LocalHandlerState`` is the same state machine in one process (tests, in-process runs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from redundancy import keys

DEAD_LETTER_MAXLEN = 100_000
"""Approximate length the dead-letter stream keeps (oldest trimmed first)."""
ERROR_CHARS = 2000

Status = Literal["run", "busy", "done", "dead"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
CLAIM = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state')
local tries = tonumber(redis.call('HGET', KEYS[1], 'tries') or '0')
if state == 'done' or state == 'dead' then return {state, tries, 0} end
if state == 'running' then
  local lease_end = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
  if lease_end > now and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
    return {'busy', tries, lease_end - now}
  end
end
tries = tries + 1
redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[1],
           'until', now + tonumber(ARGV[2]), 'tries', tries)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'run', tries, 0}
"""
)
RENEW = (
    _NOW
    + """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'state') == 'running' then
  redis.call('HSET', KEYS[1], 'until', now + tonumber(ARGV[2]))
  return 1
end
return 0
"""
)
FAILED = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'state') == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'owner', '', 'until', 0, 'error', ARGV[2])
  return 1
end
return 0
"""
FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' or state == 'dead' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
redis.call('HDEL', KEYS[1], 'owner', 'until')  -- a finished claim keeps only what it needs
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[1] == 'dead' then
  redis.call('HSET', KEYS[1], 'error', ARGV[4])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 5))
end
return 1
"""
"""``done`` or ``dead`` (with its dead letter) unless the event was finished already."""
REVIVE = """
if redis.call('HGET', KEYS[1], 'state') == 'dead' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
"""Forget a dead-lettered claim, so the event runs again when it is delivered again."""


@dataclass(frozen=True)
class Claim:
    status: Status
    tries: int
    """Tries started so far, this one included when ``status`` is ``run``."""
    wait: float = 0.0
    """``busy``: seconds left on the holder's lease."""


@dataclass(frozen=True)
class DeadLetter:
    """An event a handler gave up on, as ``crd events dead-letters`` shows it."""

    id: str
    event_id: str
    event_type: str
    handler: str
    group: str
    error: str
    tries: int
    failed_at: str
    envelope: str
    """The event as JSON."""

    @classmethod
    def of(cls, entry_id: str, fields: Mapping[str, str]) -> DeadLetter:
        return cls(
            id=entry_id,
            event_id=fields.get("event_id", ""),
            event_type=fields.get("event_type", ""),
            handler=fields.get("handler", ""),
            group=fields.get("group", ""),
            error=fields.get("error", ""),
            tries=int(fields.get("tries", "0") or 0),
            failed_at=fields.get("failed_at", ""),
            envelope=fields.get("envelope", ""),
        )


def dead_letter_fields(
    *, event_id: str, event_type: str, handler: str, group: str, error: str, tries: int,
    envelope: str,
) -> dict[str, str]:  # fmt: skip
    return {
        "event_id": event_id,
        "event_type": event_type,
        "handler": handler,
        "group": group,
        "error": error[:ERROR_CHARS],
        "tries": str(tries),
        "failed_at": datetime.now(UTC).isoformat(),
        "envelope": envelope,
    }


class HandlerState(Protocol):
    """Claims and dead letters of the handlers (Redis, or one process's stand-in)."""

    def claim(self, key: str, owner: str, lease: float) -> Claim: ...
    def renew(self, key: str, owner: str, lease: float) -> bool: ...
    def failed(self, key: str, owner: str, error: str) -> None: ...
    def done(self, key: str) -> None: ...
    def dead(self, key: str, letter: dict[str, str]) -> bool: ...
    def dead_letters(self, count: int, after: str | None = None) -> list[DeadLetter]: ...
    def dead_letter_count(self) -> int: ...
    def revive(self, key: str) -> bool: ...
    def drop_dead_letter(self, letter_id: str) -> bool: ...


def claim_key(group: str, handler: str, event_id: str) -> str:
    return keys.handler_claim(group, handler, event_id)


class RedisHandlerState:
    """Claims and dead letters in Redis (module docstring); ``done_ttl`` seconds of
    memory for finished claims."""

    def __init__(self, client: Any, done_ttl: float) -> None:
        self._redis = client
        self.done_ttl_ms = max(1, round(done_ttl * 1000))
        self._claim = client.register_script(CLAIM)
        self._renew = client.register_script(RENEW)
        self._failed = client.register_script(FAILED)
        self._finish = client.register_script(FINISH)
        self._revive = client.register_script(REVIVE)

    def claim(self, key: str, owner: str, lease: float) -> Claim:
        status, tries, wait_ms = self._claim(keys=[key], args=[owner, _ms(lease), self.done_ttl_ms])
        return Claim(_text(status), int(tries), int(wait_ms) / 1000)  # type: ignore[arg-type]

    def renew(self, key: str, owner: str, lease: float) -> bool:
        return bool(self._renew(keys=[key], args=[owner, _ms(lease)]))

    def failed(self, key: str, owner: str, error: str) -> None:
        self._failed(keys=[key], args=[owner, error[:ERROR_CHARS]])

    def done(self, key: str) -> None:
        self._finish(keys=[key, keys.event_dead_letters()], args=["done", self.done_ttl_ms])

    def dead(self, key: str, letter: dict[str, str]) -> bool:
        flat = [part for item in letter.items() for part in item]
        return bool(
            self._finish(
                keys=[key, keys.event_dead_letters()],
                args=["dead", self.done_ttl_ms, DEAD_LETTER_MAXLEN, letter["error"], *flat],
            )
        )

    def dead_letters(self, count: int, after: str | None = None) -> list[DeadLetter]:
        start = "-" if after is None else f"({after}"
        entries = self._redis.xrange(keys.event_dead_letters(), start, "+", count=count)
        return [
            DeadLetter.of(_text(i), {_text(k): _text(v) for k, v in f.items()}) for i, f in entries
        ]

    def dead_letter_count(self) -> int:
        return int(self._redis.xlen(keys.event_dead_letters()))

    def revive(self, key: str) -> bool:
        return bool(self._revive(keys=[key], args=[]))

    def drop_dead_letter(self, letter_id: str) -> bool:
        return bool(self._redis.xdel(keys.event_dead_letters(), letter_id))


class LocalHandlerState:
    """``RedisHandlerState`` inside one process (the same transitions, a monotonic
    clock, no expiry of finished claims)."""

    def __init__(self) -> None:
        self._claims: dict[str, dict[str, Any]] = {}
        self._dead: list[DeadLetter] = []
        self._lock = threading.Lock()

    def claim(self, key: str, owner: str, lease: float) -> Claim:
        now = time.monotonic()
        with self._lock:
            found = self._claims.setdefault(key, {"state": None, "tries": 0})
            if found["state"] in ("done", "dead"):
                return Claim(found["state"], found["tries"])
            if found["state"] == "running" and found["until"] > now and found["owner"] != owner:
                return Claim("busy", found["tries"], found["until"] - now)
            found.update(state="running", owner=owner, until=now + lease)
            found["tries"] += 1
            return Claim("run", found["tries"])

    def renew(self, key: str, owner: str, lease: float) -> bool:
        with self._lock:
            found = self._claims.get(key)
            if found and found["state"] == "running" and found["owner"] == owner:
                found["until"] = time.monotonic() + lease
                return True
            return False

    def failed(self, key: str, owner: str, error: str) -> None:
        with self._lock:
            found = self._claims.get(key)
            if found and found["state"] == "running" and found["owner"] == owner:
                found.update(state="failed", owner="", until=0.0, error=error[:ERROR_CHARS])

    def done(self, key: str) -> None:
        self._finish(key, "done", None)

    def dead(self, key: str, letter: dict[str, str]) -> bool:
        return self._finish(key, "dead", letter)

    def _finish(self, key: str, state: str, letter: dict[str, str] | None) -> bool:
        with self._lock:
            found = self._claims.setdefault(key, {"state": None, "tries": 0})
            if found["state"] in ("done", "dead"):
                return False
            found.update(state=state, owner="", until=0.0)
            if letter is not None:
                self._dead.append(DeadLetter.of(f"{len(self._dead) + 1}-0", letter))
            return True

    def dead_letters(self, count: int, after: str | None = None) -> list[DeadLetter]:
        with self._lock:
            ids = [d.id for d in self._dead]
            start = ids.index(after) + 1 if after in ids else 0
            return self._dead[start : start + count]

    def dead_letter_count(self) -> int:
        return len(self._dead)

    def revive(self, key: str) -> bool:
        with self._lock:
            found = self._claims.get(key)
            if found and found["state"] == "dead":
                del self._claims[key]
                return True
            return False

    def drop_dead_letter(self, letter_id: str) -> bool:
        with self._lock:
            before = len(self._dead)
            self._dead = [d for d in self._dead if d.id != letter_id]
            return len(self._dead) < before


def handler_state() -> HandlerState:
    """This process's handler state in Redis (REDIS_URL, else the result backend's);
    a clear error when neither is set."""
    from redundancy import resources
    from redundancy.config import get_settings
    from redundancy.errors import ConfigurationError

    settings = get_settings()
    url = settings.handler_state_url
    if resources.is_memory(url):
        raise ConfigurationError(
            "event handlers keep their claims and dead letters in Redis: set REDIS_URL "
            "(or CELERY_RESULT_BACKEND) to redis://host:port/db"
        )
    assert url is not None
    return resources.shared(
        f"handler-state:{url}",
        lambda: RedisHandlerState(
            resources.redis_client(url, resources.Role.JOBS), settings.events_handler_done_ttl
        ),
    )


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
