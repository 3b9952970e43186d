"""The cache's one implementation: keys, JSON values, TTLs, statistics and failure policy.

Every operation is a flow (``redundancy.kv``) that the async ``RedisCache`` and the sync
``SyncRedisCache`` run with their own driver; this module never does I/O itself.

Policy, in one place:
* every entry has a TTL (``default_ttl`` unless the caller gives one);
* values are JSON (never pickle); a stored value that does not decode is an error and a
  miss, and is overwritten by the next ``set``; ``get_or_set`` also refuses a value its
  caller's ``validate`` rejects (the wrong shape): a miss, counted, recomputed, overwritten;
* data operations (``get``, ``set``, ``get_or_set``, ``delete``) *fail open* by default:
  an unreachable or failing server is logged and counted in ``errors`` (and
  ``redundancy_cache_errors_total``), never raised, so a cache outage costs speed, not
  jobs. After a connection error the cache is skipped for ``retry_after`` seconds
  (each skipped operation is counted as an error too);
* admin operations (``delete_pattern``, shared statistics, ``ping``) raise
  ``CacheUnavailableError``: an operator must know a clear did not happen.
"""

from __future__ import annotations

import json
import logging
import random
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redundancy import keys
from redundancy.cache.metrics import CACHE_ERRORS, CACHE_HITS, CACHE_MISSES, CACHE_REJECTED
from redundancy.errors import InfrastructureError
from redundancy.kv.clients import Connector
from redundancy.kv.memory import script_twin
from redundancy.kv.ops import Call, Flow, Pipeline, RunScript, Script, Sleep, as_text, cmd
from redundancy.resources import reset_after_fork

log = logging.getLogger("redundancy.cache")

MISS: Final = object()
"""Returned by flows when nothing usable is stored (absent, undecodable or unreachable)."""

STATS_FIELDS: Final = ("hits", "misses", "errors", "sets", "deletes")
STATS_FLUSH_INTERVAL: Final = 1.0
"""Seconds between writes of this process's counters to the shared statistics hash."""
SCAN_BATCH: Final = 1000
"""Keys asked per SCAN step (and unlinked per UNLINK) by pattern operations."""
POLL_FIRST, POLL_MAX = 0.005, 0.1
"""get_or_set waiters poll for the value with jittered exponential back-off (s)."""

CONNECTION_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)
_PREFIX = re.compile(r"[a-z0-9][a-z0-9_-]*")

GET_OR_LOCK = Script(
    "cache_get_or_lock",
    """
    local value = redis.call('GET', KEYS[1])
    if value then return {1, value} end
    if redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2], 'NX') then return {2} end
    return {0}
    """,
)
"""One round trip: ``[1, value]`` (hit), ``[2]`` (we now hold the lock: compute) or
``[0]`` (another caller holds it: wait)."""

STORE_AND_UNLOCK = Script(
    "cache_store_and_unlock",
    """
    if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
    if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
    return 1
    """,
)
"""Store the value (unless empty: the factory failed) and release the lock -- only if it
still holds our token (it may have expired and been taken) -- in one atomic step, so
the value exists the moment the lock is gone."""


@script_twin(GET_OR_LOCK.name)
def _get_or_lock_twin(store: Any, k: list[bytes], a: list[bytes]) -> list[Any]:
    value = store.call("GET", k[0])
    if value is not None:
        return [1, value]
    if store.call("SET", k[1], a[0], "PX", a[1], "NX"):
        return [2]
    return [0]


@script_twin(STORE_AND_UNLOCK.name)
def _store_and_unlock_twin(store: Any, k: list[bytes], a: list[bytes]) -> int:
    if a[0] != b"":
        store.call("SET", k[0], a[0], "PX", a[1])
    if store.call("GET", k[1]) == a[2]:
        store.call("DEL", k[1])
    return 1


@dataclass
class EarlyLookup:
    """A ``GET_OR_LOCK`` of one entry sent before the caller asked for it: its keys and
    token, then its ``reply`` (None: not read) and whether ``get_or_set`` adopted it."""

    ctype: str
    full: str
    lock: str
    token: str
    lock_ms: int
    reply: Any = None
    adopted: bool = False

    @property
    def locked(self) -> bool:
        """The lookup took the entry's lock (a miss): someone must release it."""
        return self.reply is not None and int(self.reply[0]) == 2


@dataclass(frozen=True)
class StoreLater:
    """A holder's ``STORE_AND_UNLOCK`` (keys and args) handed over to be written later."""

    ctype: str
    keys: tuple[str, str]
    args: tuple[bytes, int, str]


class CacheUnavailableError(InfrastructureError):
    """The cache server did not answer an operation that cannot fail open."""


def valid_prefix(prefix: str) -> str:
    """A namespace: lower-case word, and not an area another part of the project owns."""
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ValueError(f"cache prefix must match [a-z0-9][a-z0-9_-]*, got {prefix!r}")
    if prefix in keys.NON_CACHE_AREAS:
        raise ValueError(f"{prefix!r} is another part's key area, not a cache namespace")
    return prefix


def cache_type(key: str, prefix: str) -> str:
    """The statistics/metrics label of ``key``: its first ``:`` segment (``analysis`` for
    ``analysis:v1:...``), or the prefix for a key without one."""
    head, sep, _ = key.partition(":")
    return head if sep and head else prefix


def encode(value: Any) -> bytes:
    """JSON, compact; NaN/Infinity refused (they are not JSON). The stdlib, not orjson,
    which would store NaN as null: a cached value must equal the computed one."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode(raw: bytes | str) -> Any:
    """orjson (a cache hit's main cost after the round trip), the stdlib for what it
    refuses but JSON allows (integers beyond 64 bits)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def ttl_ms(ttl: float) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, round(ttl * 1000))


class StatsBook:
    """This process's counters per cache type, plus the deltas not yet shared.

    Thread-safe; after a fork the child starts from zero (its parent counts its own).
    """

    def __init__(self) -> None:
        self._after_fork()
        reset_after_fork(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._pending: dict[tuple[str, str], int] = {}
        self._last_flush = time.monotonic()

    def flush_due(self) -> bool:
        """Cheap, lock-free: is there something to share and has a second passed?"""
        return bool(self._pending) and time.monotonic() - self._last_flush >= STATS_FLUSH_INTERVAL

    def record(self, ctype: str, field: str, n: int = 1) -> None:
        key = (ctype, field)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n
            self._pending[key] = self._pending.get(key, 0) + n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
        by_type: dict[str, dict[str, int]] = {}
        for (ctype, field), n in counts.items():
            by_type.setdefault(ctype, dict.fromkeys(STATS_FIELDS, 0))[field] = n
        return summarise(by_type)

    def take_pending(self, force: bool = False) -> dict[tuple[str, str], int]:
        """The unshared deltas, if it is time to share them (or ``force``)."""
        with self._lock:
            now = time.monotonic()
            if not self._pending or (not force and now - self._last_flush < STATS_FLUSH_INTERVAL):
                return {}
            pending, self._pending = self._pending, {}
            self._last_flush = now
            return pending

    def restore(self, pending: dict[tuple[str, str], int]) -> None:
        with self._lock:
            for k, n in pending.items():
                self._pending[k] = self._pending.get(k, 0) + n


def summarise(by_type: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Totals, hit rate and the per-type rows: the shape of every ``stats()``."""

    def with_rate(row: dict[str, int]) -> dict[str, Any]:
        looked = row["hits"] + row["misses"]
        return {**row, "hit_rate": row["hits"] / looked if looked else 0.0}

    totals = {f: sum(row.get(f, 0) for row in by_type.values()) for f in STATS_FIELDS}
    rows = {
        t: with_rate({f: row.get(f, 0) for f in STATS_FIELDS}) for t, row in sorted(by_type.items())
    }
    return {**with_rate(totals), "namespaces": rows}


class CacheCore:
    """Configuration, statistics and the flows of one cache (see the module docstring)."""

    def __init__(
        self,
        connector: Connector,
        *,
        default_ttl: float,
        namespace: str = keys.CACHE_PREFIX,
        lock_timeout: float = 60.0,
        retry_after: float = 5.0,
        fail_open: bool = True,
    ) -> None:
        ttl_ms(default_ttl)
        self.connector = connector
        self.default_ttl = default_ttl
        self.namespace = valid_prefix(namespace)
        self.lock_timeout = lock_timeout
        self.retry_after = retry_after
        self.fail_open = fail_open
        self.book = StatsBook()
        self._down_until = 0.0
        self._areas = {self.namespace: keys.area_prefix(self.namespace)}
        self._hit_counters: dict[str, Any] = {}
        self._miss_counters: dict[str, Any] = {}

    # --- small helpers ---

    def check_prefix(self, prefix: str | None) -> str:
        if prefix is None:
            return self.namespace
        if prefix not in self._areas:
            self._areas[valid_prefix(prefix)] = keys.area_prefix(prefix)
        return prefix

    def full_key(self, prefix: str, key: str) -> str:
        """``keys.cache_key(prefix, key)``, with the prefix's area string made once."""
        return self._areas[prefix] + key

    @staticmethod
    def check_key(key: str) -> str:
        if not isinstance(key, str) or not key:
            raise ValueError(f"cache keys are non-empty strings, got {key!r}")
        return key

    def _hit(self, ctype: str) -> None:
        self.book.record(ctype, "hits")
        counter = self._hit_counters.get(ctype)
        if counter is None:
            self._counters(ctype)
            counter = self._hit_counters[ctype]
        counter.inc()

    def _miss(self, ctype: str) -> None:
        self.book.record(ctype, "misses")
        counter = self._miss_counters.get(ctype)
        if counter is None:
            self._counters(ctype)
            counter = self._miss_counters[ctype]
        counter.inc()

    def _rejected(self, ctype: str, full: str, reason: str) -> None:
        CACHE_REJECTED.labels(ctype, reason).inc()
        log.warning("cache value of %s refused (%s): computing it again", full, reason)

    def _counters(self, ctype: str) -> None:
        """Both counters of a cache type, created together: a hit rate needs both series
        (a cache that only hits would otherwise show no rate at all)."""
        self._hit_counters[ctype] = CACHE_HITS.labels(ctype)
        self._miss_counters[ctype] = CACHE_MISSES.labels(ctype)

    def _error(self, ctype: str, operation: str, exc: BaseException | None) -> None:
        """Count (and log) a failed operation; raise it unless the cache fails open."""
        self.book.record(ctype, "errors")
        CACHE_ERRORS.labels(ctype, operation).inc()
        if exc is None:
            return  # skipped while the server is known to be down
        if isinstance(exc, CONNECTION_ERRORS):
            self._down_until = time.monotonic() + self.retry_after
        log.warning(
            "cache %s failed on %s (%s: %s); going on without the cache",
            operation,
            self.connector.describe(),
            type(exc).__name__,
            exc,
        )
        if not self.fail_open:
            raise CacheUnavailableError(
                f"cache {operation} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _skipped(self, ctype: str, operation: str) -> bool:
        """True (and counted as an error) while a recent connection error holds."""
        if self._down_until and time.monotonic() < self._down_until:
            self._error(ctype, operation, None)
            if not self.fail_open:
                raise CacheUnavailableError(
                    f"cache {operation} skipped: {self.connector.describe()} failed less than "
                    f"{self.retry_after:g} s ago"
                )
            return True
        return False

    def _decode(self, raw: Any, ctype: str, operation: str) -> Any:
        if raw is None:
            return MISS
        try:
            return decode(raw)
        except ValueError as exc:
            self._error(ctype, operation + ":decode", exc)
            return MISS

    def _flush(self, force: bool = False) -> Flow[None]:
        """Add this process's new counts to the shared hash (best effort, ~once a second)."""
        pending = self.book.take_pending(force)
        if not pending:
            return
        commands = tuple(
            cmd("HINCRBY", keys.CACHE_STATS, f"{ctype}:{field}", n)
            for (ctype, field), n in pending.items()
        )
        try:
            yield Pipeline(commands)
        except Exception:
            self.book.restore(pending)
            if force:
                raise

    # --- flows of the data operations ---

    def get(self, key: str, prefix: str | None = None) -> Flow[Any]:
        prefix = self.check_prefix(prefix)
        ctype = cache_type(self.check_key(key), prefix)
        if self._skipped(ctype, "get"):
            return MISS
        if self.book.flush_due():
            yield from self._flush()
        try:
            raw = yield cmd("GET", self.full_key(prefix, key))
        except Exception as exc:
            self._error(ctype, "get", exc)
            return MISS
        value = self._decode(raw, ctype, "get")
        if value is MISS:
            self._miss(ctype)
        else:
            self._hit(ctype)
        return value

    def set(
        self, key: str, value: Any, ttl: float | None = None, prefix: str | None = None
    ) -> Flow[bool]:
        prefix = self.check_prefix(prefix)
        ctype = cache_type(self.check_key(key), prefix)
        data = encode(value)  # a value that is not JSON is the caller's bug: raise
        ms = ttl_ms(self.default_ttl if ttl is None else ttl)
        if self._skipped(ctype, "set"):
            return False
        try:
            yield cmd("SET", self.full_key(prefix, key), data, "PX", ms)
        except Exception as exc:
            self._error(ctype, "set", exc)
            return False
        self.book.record(ctype, "sets")
        return True

    def delete(self, key: str, prefix: str | None = None) -> Flow[bool]:
        prefix = self.check_prefix(prefix)
        ctype = cache_type(self.check_key(key), prefix)
        if self._skipped(ctype, "delete"):
            return False
        try:
            removed = yield cmd("UNLINK", self.full_key(prefix, key))
        except Exception as exc:
            self._error(ctype, "delete", exc)
            return False
        self.book.record(ctype, "deletes", int(removed))
        return bool(removed)

    def early_lookup(self, key: str, prefix: str | None = None) -> EarlyLookup | None:
        """A lookup to send before ``get_or_set`` asks (``redundancy.cache.overlap``); None
        while the server is known to be down."""
        prefix = self.check_prefix(prefix)
        full = self.full_key(prefix, self.check_key(key))
        if self._down_until and time.monotonic() < self._down_until:
            return None
        lock = keys.cache_lock(prefix, key)
        ctype = cache_type(key, prefix)
        return EarlyLookup(ctype, full, lock, secrets.token_hex(16), ttl_ms(self.lock_timeout))

    def lookup_failed(self, early: EarlyLookup, exc: BaseException) -> None:
        """An early lookup's reply could not be read: counted and logged like a lookup."""
        self._error(early.ctype, "get_or_set", exc)

    def stored_later(self, later: StoreLater, exc: BaseException | None) -> None:
        """A store handed to ``defer`` was written (``exc`` None) or failed."""
        if exc is None:
            self.book.record(later.ctype, "sets")
        else:
            self._error(later.ctype, "set", exc)

    def get_or_set(
        self,
        key: str,
        factory: Callable[[], Any],
        ttl: float | None = None,
        prefix: str | None = None,
        validate: Callable[[Any], bool] | None = None,
        early: EarlyLookup | None = None,
        defer: Callable[[StoreLater], bool] | None = None,
    ) -> Flow[Any]:
        """The stored value, or ``factory()`` computed by exactly one of the callers that
        miss at the same moment (a short lock, ``SET NX PX`` + compare-and-delete).

        ``validate``: a stored value it returns False for (or one that does not decode)
        is not believed: counted in ``redundancy_cache_rejected_values_total{reason}``,
        computed again and overwritten, as a miss.

        One round trip looks up the value or takes the lock; the holder stores the value
        and releases the lock in another (two per miss, one per hit). The others poll
        with jittered back-off and count a hit when the value arrives. A holder that dies
        leaves a lock that expires after ``lock_timeout``; a holder whose factory raised
        releases it at once and the next caller tries. A waiter that waited
        ``lock_timeout`` computes itself.
        Each call counts one hit (the value came from the cache) or one miss (this caller
        ran the factory); an unreachable cache counts errors and just runs the factory.

        ``early``: the lookup of this key already sent (its reply replaces the first round
        trip); ``defer``: takes the holder's store and unlock to write later, returning
        True, instead of a round trip now (``redundancy.cache.overlap``).
        """
        prefix = self.check_prefix(prefix)
        ctype = cache_type(self.check_key(key), prefix)
        full = self.full_key(prefix, key)
        ms = ttl_ms(self.default_ttl if ttl is None else ttl)
        if self._skipped(ctype, "get_or_set"):
            return (yield Call(factory))
        if self.book.flush_due():
            yield from self._flush()
        lock = keys.cache_lock(prefix, key)
        token = secrets.token_hex(16)
        lock_ms = ttl_ms(self.lock_timeout)
        adopted = early is not None and early.full == full and early.reply is not None
        if adopted and early is not None:
            early.adopted, token = True, early.token
        deadline = time.monotonic() + self.lock_timeout
        delay = POLL_FIRST
        while True:
            try:
                if adopted and early is not None:
                    reply, adopted = early.reply, False
                else:
                    reply = yield RunScript(GET_OR_LOCK, (full, lock), (token, lock_ms))
            except Exception as exc:
                self._error(ctype, "get_or_set", exc)
                return (yield Call(factory))
            if int(reply[0]) == 1:
                value = self._decode(reply[1], ctype, "get_or_set")
                if value is not MISS and (validate is None or validate(value)):
                    self._hit(ctype)
                    return value
                self._rejected(ctype, full, "undecodable" if value is MISS else "invalid")
                break  # compute below, without the lock, and overwrite it
            if int(reply[0]) == 2:
                return (
                    yield from self._compute_locked(ctype, full, factory, ms, lock, token, defer)
                )
            if time.monotonic() >= deadline:
                log.warning("get_or_set waited %gs for %s; computing", self.lock_timeout, full)
                break
            yield Sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, POLL_MAX)
        self._miss(ctype)
        value = yield Call(factory)
        yield from self._store(ctype, full, value, ms)
        return value

    def _compute_locked(
        self,
        ctype: str,
        full: str,
        factory: Callable[[], Any],
        ms: int,
        lock: str,
        token: str,
        defer: Callable[[StoreLater], bool] | None = None,
    ) -> Flow[Any]:
        self._miss(ctype)
        try:
            value = yield Call(factory)
            data = encode(value)
        except Exception:
            yield from self._unlock(ctype, full, b"", ms, lock, token)
            raise
        if defer is not None and defer(StoreLater(ctype, (full, lock), (data, ms, token))):
            return value
        yield from self._unlock(ctype, full, data, ms, lock, token)
        return value

    def _store(self, ctype: str, full: str, value: Any, ms: int) -> Flow[None]:
        data = encode(value)
        try:
            yield cmd("SET", full, data, "PX", ms)
            self.book.record(ctype, "sets")
        except Exception as exc:
            self._error(ctype, "set", exc)

    def _unlock(
        self, ctype: str, full: str, data: bytes, ms: int, lock: str, token: str
    ) -> Flow[None]:
        try:
            yield RunScript(STORE_AND_UNLOCK, (full, lock), (data, ms, token))
        except Exception as exc:  # the lock expires by itself
            self._error(ctype, "set" if data else "unlock", exc)
            return
        if data:
            self.book.record(ctype, "sets")

    # --- admin flows (they raise CacheUnavailableError) ---

    def delete_pattern(
        self, pattern: str, prefix: str | None = None, batch: int = SCAN_BATCH
    ) -> Flow[int]:
        """Unlink every key of namespace ``prefix`` whose key matches the glob ``pattern``
        (SCAN + UNLINK in batches; never KEYS, which blocks the server)."""
        prefix = self.check_prefix(prefix)
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"pattern must be a non-empty glob, got {pattern!r}")
        match = keys.cache_key(prefix, pattern)
        cursor: Any = 0
        deleted = 0
        try:
            while True:
                cursor, found = yield cmd("SCAN", cursor, "MATCH", match, "COUNT", batch)
                if found:
                    deleted += int((yield cmd("UNLINK", *found)))
                if int(cursor) == 0:
                    break
        except Exception as exc:
            raise CacheUnavailableError(
                f"delete_pattern({pattern!r}) stopped after {deleted} keys on "
                f"{self.connector.describe()}: {type(exc).__name__}: {exc}"
            ) from exc
        self.book.record(cache_type(pattern, prefix), "deletes", deleted)
        return deleted

    def count_keys(
        self, prefix: str | None = None, batch: int = SCAN_BATCH
    ) -> Flow[dict[str, int]]:
        """Stored entries per cache type in one namespace (a full SCAN: an ops tool)."""
        prefix = self.check_prefix(prefix)
        area = keys.area_prefix(prefix)
        counts: dict[str, int] = {}
        cursor: Any = 0
        try:
            while True:
                cursor, found = yield cmd("SCAN", cursor, "MATCH", area + "*", "COUNT", batch)
                for raw in found:
                    t = cache_type(as_text(raw)[len(area) :], prefix)
                    counts[t] = counts.get(t, 0) + 1
                if int(cursor) == 0:
                    return dict(sorted(counts.items()))
        except Exception as exc:
            raise CacheUnavailableError(f"cannot count keys: {type(exc).__name__}: {exc}") from exc

    def shared_stats(self) -> Flow[dict[str, Any]]:
        """Counters summed over every process that shared them (after a flush of ours)."""
        try:
            yield from self._flush(force=True)
            raw = yield cmd("HGETALL", keys.CACHE_STATS)
        except Exception as exc:
            raise CacheUnavailableError(
                f"cannot read shared statistics: {type(exc).__name__}: {exc}"
            ) from exc
        by_type: dict[str, dict[str, int]] = {}
        for field, count in (raw or {}).items():
            ctype, _, name = as_text(field).rpartition(":")
            if name in STATS_FIELDS:
                by_type.setdefault(ctype, dict.fromkeys(STATS_FIELDS, 0))[name] = int(count)
        return summarise(by_type)

    def flush_stats(self) -> Flow[None]:
        try:
            yield from self._flush(force=True)
        except Exception as exc:
            raise CacheUnavailableError(
                f"cannot share statistics: {type(exc).__name__}: {exc}"
            ) from exc

    def ping(self) -> Flow[bool]:
        try:
            return bool((yield cmd("PING")))
        except Exception as exc:
            raise CacheUnavailableError(
                f"{self.connector.describe()} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
