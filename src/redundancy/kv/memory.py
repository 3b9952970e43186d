"""``MemoryStore``: the in-memory twin of the Redis commands the cache and sessions use.

It answers with the same shapes redis-py gives (bytes values, ``True``/``None`` from SET,
``(cursor, keys)`` from SCAN ...), expires keys by TTL, and runs Lua scripts through
Python twins registered by name. One lock makes every command, pipeline and script
atomic, as Redis does. ``max_keys`` bounds its memory: past it, the least recently used
key is evicted (Redis's ``allkeys-lru``). The same test suite runs against it and
against real Redis, and one table of cases (``tests/integration/test_kv_twin.py``) runs
every Lua script and its twin, and the commands we send, on both and requires equal
replies -- so a script cannot change without its twin being checked against the server.

Why twins rather than running the same Lua on ``fakeredis[lua]`` (measured on the
2-core dev machine, median of 9 interleaved runs, twins vs fakeredis 2.41 + lupa 2.8):
a first cache use in a fresh process took 904 vs 1043 ms, a first session use 692 vs
946 ms, ``crd analyze`` 1355 vs 1424 ms (``crd batch examples/corpus``, which uses no
store here, 1775 vs 1884 ms: noise); per operation in-process, a cache hit 4 vs 30 us,
a ``get_or_set`` hit 8 vs 115 us, a session read 20 vs 280 us. fakeredis also has no
eviction, so ``CACHE_MEMORY_MAX_KEYS`` could not bound the embedded cache, and it would
add two dependencies (one compiled). The twins cost this module and a Python copy of
each of six short scripts; the table keeps them honest.
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from redundancy.kv.ops import Command, Script

MAX_CURSORS = 1000
"""SCAN cursors kept at once (a scan abandoned midway leaves one behind)."""

ScriptTwin = Callable[["MemoryStore", list[bytes], list[bytes]], Any]
SCRIPT_TWINS: dict[str, ScriptTwin] = {}
"""Python twins of our Lua scripts, by ``Script.name`` (registered next to each script)."""


def script_twin(name: str) -> Callable[[ScriptTwin], ScriptTwin]:
    def register(fn: ScriptTwin) -> ScriptTwin:
        SCRIPT_TWINS[name] = fn
        return fn

    return register


class ResponseError(Exception):
    """What Redis answers to a malformed command (WRONGTYPE, syntax ...)."""


def b(value: Any) -> bytes:
    """Encode an argument the way redis-py does."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise ResponseError("booleans are not Redis values")
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


class MemoryStore:
    """A thread-safe dict of Redis-typed values with TTLs (see the module docstring)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._data: OrderedDict[bytes, Any] = OrderedDict()
        self._expires: dict[bytes, float] = {}
        self._cursors: dict[int, bytes] = {}
        self._next_cursor = 0
        self.lock = threading.RLock()

    # --- the backend protocol (sync; the async adapter calls the same methods) ---

    def execute(self, args: tuple[Any, ...]) -> Any:
        with self.lock:
            return self.call(*args)

    def pipeline(self, commands: tuple[Command, ...], transaction: bool) -> list[Any]:
        with self.lock:  # always atomic: stronger than a plain pipeline, never weaker
            return [self.call(*c.args) for c in commands]

    def script(self, script: Script, keys: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
        twin = SCRIPT_TWINS.get(script.name)
        if twin is None:
            raise ResponseError(f"NOSCRIPT no Python twin for script {script.name!r}")
        with self.lock:
            return twin(self, [b(k) for k in keys], [b(a) for a in args])

    def call(self, name: str, *args: Any) -> Any:
        """One command; the caller holds the lock (scripts call this too)."""
        handler = getattr(self, "_" + str(name).lower(), None)
        if handler is None:
            raise ResponseError(f"ERR unknown command '{name}' (not in the in-memory twin)")
        return handler(*args)

    # --- keyspace helpers ---

    def _alive(self, key: bytes) -> bool:
        deadline = self._expires.get(key)
        if deadline is not None and deadline <= time.monotonic():
            self._drop(key)
            return False
        return key in self._data

    def _drop(self, key: bytes) -> bool:
        self._expires.pop(key, None)
        return self._data.pop(key, None) is not None

    def _read(self, key: Any, kind: type) -> Any:
        k = b(key)
        if not self._alive(k):
            return None
        value = self._data[k]
        if not isinstance(value, kind):
            raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
        self._data.move_to_end(k)
        return value

    def _write(self, key: Any, value: Any, *, keep_ttl: bool = True) -> None:
        k = b(key)
        self._alive(k)
        self._data[k] = value
        self._data.move_to_end(k)
        if not keep_ttl:
            self._expires.pop(k, None)
        while len(self._data) > self.max_keys:
            oldest = next(iter(self._data))
            self._drop(oldest)

    def _container(self, key: Any, kind: type) -> Any:
        value = self._read(key, kind)
        if value is None:
            value = kind()
            self._write(key, value)
        return value

    def _cleanup(self, key: Any) -> None:
        k = b(key)
        if k in self._data and not self._data[k]:
            self._drop(k)  # Redis deletes empty hashes, sets and lists

    # --- strings and keys ---

    def _ping(self) -> bool:
        return True

    def _time(self) -> tuple[int, int]:
        now = time.time_ns() // 1000
        return now // 1_000_000, now % 1_000_000

    def _get(self, key: Any) -> bytes | None:
        return self._read(key, bytes)  # type: ignore[no-any-return]

    def _set(self, key: Any, value: Any, *options: Any) -> bool | None:
        opts = [str(o).upper() if isinstance(o, str) else o for o in options]
        ttl_ms: float | None = None
        i = 0
        nx = xx = False
        while i < len(opts):
            opt = opts[i]
            if opt in ("EX", "PX"):
                ttl_ms = float(opts[i + 1]) * (1000 if opt == "EX" else 1)
                i += 2
                continue
            nx |= opt == "NX"
            xx |= opt == "XX"
            i += 1
        k = b(key)
        exists = self._alive(k)
        if (nx and exists) or (xx and not exists):
            return None
        self._write(k, b(value), keep_ttl=False)
        if ttl_ms is not None:
            self._expires[k] = time.monotonic() + ttl_ms / 1000
        return True

    def _unlink(self, *keys: Any) -> int:
        return sum(1 for k in keys if self._alive(b(k)) and self._drop(b(k)))

    _del = _unlink

    def _exists(self, *keys: Any) -> int:
        return sum(1 for k in keys if self._alive(b(k)))

    def _pexpire(self, key: Any, ms: Any) -> bool:
        k = b(key)
        if not self._alive(k):
            return False
        self._expires[k] = time.monotonic() + int(ms) / 1000
        return True

    def _pttl(self, key: Any) -> int:
        k = b(key)
        if not self._alive(k):
            return -2
        deadline = self._expires.get(k)
        return -1 if deadline is None else max(0, round((deadline - time.monotonic()) * 1000))

    def _scan(self, cursor: Any, *options: Any) -> tuple[int, list[bytes]]:
        """Keys in sorted order; a cursor remembers the last key it returned, so keys
        deleted during the scan never make it skip others (Redis's guarantee: every key
        present for the whole scan is returned). MATCH uses Redis's glob syntax."""
        opts = [str(o).upper() if isinstance(o, str) else o for o in options]
        pattern, count = b"*", 10
        for i in range(0, len(opts) - 1, 2):
            if opts[i] == "MATCH":
                pattern = b(options[i + 1])
            elif opts[i] == "COUNT":
                count = int(opts[i + 1])
        after = self._cursors.pop(int(cursor), None) if int(cursor) else None
        snapshot = sorted(self._data)
        start = 0 if after is None else bisect.bisect_right(snapshot, after)
        window = snapshot[start : start + count]
        regex = glob_regex(pattern.decode())
        found = [k for k in window if self._alive(k) and regex.fullmatch(k.decode())]
        if start + count >= len(snapshot):
            return 0, found
        self._next_cursor += 1
        self._cursors[self._next_cursor] = window[-1]
        while len(self._cursors) > MAX_CURSORS:  # abandoned scans
            self._cursors.pop(next(iter(self._cursors)))
        return self._next_cursor, found

    def _dbsize(self) -> int:
        return sum(1 for k in list(self._data) if self._alive(k))

    # --- hashes ---

    def _hset(self, key: Any, *pairs: Any) -> int:
        h = self._container(key, dict)
        added = 0
        for field, value in zip(pairs[::2], pairs[1::2], strict=True):
            added += b(field) not in h
            h[b(field)] = b(value)
        return added

    def _hget(self, key: Any, field: Any) -> bytes | None:
        h = self._read(key, dict)
        return None if h is None else h.get(b(field))

    def _hmget(self, key: Any, *fields: Any) -> list[bytes | None]:
        h = self._read(key, dict) or {}
        return [h.get(b(field)) for field in fields]

    def _hgetall(self, key: Any) -> dict[bytes, bytes]:
        return dict(self._read(key, dict) or {})

    def _hincrby(self, key: Any, field: Any, amount: Any) -> int:
        h = self._container(key, dict)
        value = int(h.get(b(field), b"0")) + int(amount)
        h[b(field)] = b(value)
        return value

    # --- sorted sets (scores only; enough for the session index) ---

    def _zadd(self, key: Any, *pairs: Any) -> int:
        z = self._container(key, _ZSet)
        added = 0
        for score, member in zip(pairs[::2], pairs[1::2], strict=True):
            added += b(member) not in z
            z[b(member)] = float(score)
        return added

    def _zrem(self, key: Any, *members: Any) -> int:
        z = self._read(key, _ZSet)
        if z is None:
            return 0
        removed = sum(1 for m in members if z.pop(b(m), None) is not None)
        self._cleanup(key)
        return removed

    def _zscore(self, key: Any, member: Any) -> float | None:
        z = self._read(key, _ZSet)
        return None if z is None or b(member) not in z else z[b(member)]

    def _zrangebyscore(self, key: Any, low: Any, high: Any) -> list[bytes]:
        z = self._read(key, _ZSet) or {}
        lo, hi = _bound(low), _bound(high)
        return [m for m, s in sorted(z.items(), key=lambda i: (i[1], i[0])) if lo <= s <= hi]

    def _zremrangebyscore(self, key: Any, low: Any, high: Any) -> int:
        z = self._read(key, _ZSet)
        if z is None:
            return 0
        doomed = self._zrangebyscore(key, low, high)
        for m in doomed:
            del z[m]
        self._cleanup(key)
        return len(doomed)

    # --- lists ---

    def _rpush(self, key: Any, *values: Any) -> int:
        lst = self._container(key, list)
        lst.extend(b(v) for v in values)
        return len(lst)

    def _lrange(self, key: Any, start: Any, stop: Any) -> list[bytes]:
        lst = self._read(key, list) or []
        return lst[_slice(int(start), int(stop), len(lst))]

    def _ltrim(self, key: Any, start: Any, stop: Any) -> bool:
        lst = self._read(key, list)
        if lst is not None:
            lst[:] = lst[_slice(int(start), int(stop), len(lst))]
            self._cleanup(key)
        return True


class _ZSet(dict):  # type: ignore[type-arg]
    """member -> score (a distinct type, so WRONGTYPE checks tell it from a hash)."""


def _bound(value: Any) -> float:
    return float(value.decode() if isinstance(value, bytes) else value)  # "-inf", "+inf" too


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Redis's MATCH glob (``*``, ``?``, ``[abc]``, ``[^a]``, ``\\x`` escapes) as a regex."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and (end := pattern.find("]", i + 1)) > i:
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _slice(start: int, stop: int, length: int) -> slice:
    """Redis's inclusive, negative-aware LRANGE/LTRIM indexes as a Python slice."""
    if start < 0:
        start = max(0, length + start)
    stop = length + stop if stop < 0 else stop
    return slice(start, stop + 1)


class AsyncMemoryBackend:
    """The async face of a MemoryStore (its operations never block)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def execute(self, args: tuple[Any, ...]) -> Any:
        return self.store.execute(args)

    async def pipeline(self, commands: tuple[Command, ...], transaction: bool) -> list[Any]:
        return self.store.pipeline(commands, transaction)

    async def script(self, script: Script, keys: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
        return self.store.script(script, keys, args)
