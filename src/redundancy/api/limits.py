"""Rate limits and daily quotas per API key: atomic, on the server's clock, shared by
every API instance (README, "HTTP API").

* **Requests per second with a burst**: GCRA (the generic cell rate algorithm of
  redis-cell), one Lua script. Each key stores one number, its *theoretical arrival
  time* (TAT). A request at ``now`` is allowed when ``max(TAT, now) + T - now <= B*T``
  (``T = 1/rate``, ``B`` = burst), and then moves TAT by ``T``: an idle key may send ``B``
  requests at once, and over any span of ``s`` seconds at most ``B + rate*s`` pass.
* **Documents and bytes per UTC day**: one hash per key holding the day and both sums;
  a charge that would cross either limit is refused whole, and nothing is added.

Both scripts read Redis's ``TIME``, so hosts with skewed clocks agree, and both answer
what the ``RateLimit-*`` and ``Retry-After`` headers need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from redundancy import keys
from redundancy.kv import Flow, RunScript, Script
from redundancy.kv.memory import script_twin
from redundancy.kv.ops import as_text

DAY_SECONDS = 86_400

GCRA = Script(
    "api_gcra",
    """
    local t = redis.call('TIME')
    local now = t[1] * 1000 + t[2] / 1000
    local period = tonumber(ARGV[1])
    local burst = tonumber(ARGV[2])
    local tolerance = period * burst
    local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
    if tat < now then tat = now end
    local new_tat = tat + period
    if new_tat - now > tolerance then
        local retry = new_tat - now - tolerance
        return {0, 0, math.ceil(retry), math.ceil(tat - now)}
    end
    redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now))
    local remaining = math.floor((tolerance - (new_tat - now)) / period)
    return {1, remaining, 0, math.ceil(new_tat - now)}
    """,
)
"""ARGV: period (ms per request), burst. Answers {allowed, remaining, retry_ms, reset_ms}."""


@script_twin(GCRA.name)
def _gcra_twin(store: Any, k: list[bytes], a: list[bytes]) -> list[int]:
    sec, usec = store.call("TIME")
    now = int(sec) * 1000 + int(usec) / 1000
    period, burst = float(a[0]), float(a[1])
    tolerance = period * burst
    tat = max(float(store.call("GET", k[0]) or 0), now)
    new_tat = tat + period
    if new_tat - now > tolerance:
        return [0, 0, math.ceil(new_tat - now - tolerance), math.ceil(tat - now)]
    store.call("SET", k[0], repr(new_tat), "PX", math.ceil(new_tat - now))
    return [1, math.floor((tolerance - (new_tat - now)) / period), 0, math.ceil(new_tat - now)]


QUOTA = Script(
    "api_quota",
    """
    local t = redis.call('TIME')
    local day = math.floor(t[1] / 86400)
    local left = 86400 - t[1] % 86400
    local h = redis.call('HMGET', KEYS[1], 'day', 'documents', 'bytes')
    local docs, size = 0, 0
    if tonumber(h[1]) == day then docs, size = tonumber(h[2]), tonumber(h[3]) end
    local add_docs, add_bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
    if add_docs > 0 and docs + add_docs > tonumber(ARGV[3]) then
        return {0, docs, size, left, 'documents'}
    end
    if add_bytes > 0 and size + add_bytes > tonumber(ARGV[4]) then
        return {0, docs, size, left, 'bytes'}
    end
    docs, size = math.max(0, docs + add_docs), math.max(0, size + add_bytes)
    redis.call('HSET', KEYS[1], 'day', day, 'documents', docs, 'bytes', size)
    redis.call('EXPIRE', KEYS[1], left)
    return {1, docs, size, left, ''}
    """,
)
"""ARGV: documents, bytes (negative: a refund), documents limit, bytes limit.
Answers {allowed, documents used, bytes used, seconds to the next UTC day, limit hit}."""


@script_twin(QUOTA.name)
def _quota_twin(store: Any, k: list[bytes], a: list[bytes]) -> list[Any]:
    sec, _ = store.call("TIME")
    day, left = int(sec) // DAY_SECONDS, DAY_SECONDS - int(sec) % DAY_SECONDS
    stored = store.call("HGETALL", k[0])
    docs = size = 0
    if stored and int(stored[b"day"]) == day:
        docs, size = int(stored[b"documents"]), int(stored[b"bytes"])
    add_docs, add_bytes = int(a[0]), int(a[1])
    if add_docs > 0 and docs + add_docs > int(a[2]):
        return [0, docs, size, left, b"documents"]
    if add_bytes > 0 and size + add_bytes > int(a[3]):
        return [0, docs, size, left, b"bytes"]
    docs, size = max(0, docs + add_docs), max(0, size + add_bytes)
    store.call("HSET", k[0], "day", day, "documents", docs, "bytes", size)
    store.call("PEXPIRE", k[0], left * 1000)
    return [1, docs, size, left, b""]


@dataclass(frozen=True)
class RateDecision:
    """One request's admission under a key's rate limit, and its response headers."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int
    """Seconds until a refused request would pass (0 when allowed)."""
    reset: int
    """Seconds until the full burst is available again."""
    window: int

    def headers(self) -> dict[str, str]:
        """IETF draft ``RateLimit-*`` fields, plus ``Retry-After`` when refused."""
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
            "RateLimit-Policy": f"{self.limit};w={self.window}",
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


@dataclass(frozen=True)
class QuotaDecision:
    allowed: bool
    documents: int
    bytes: int
    reset: int
    """Seconds until the next UTC day, when the quota starts again."""
    exceeded: str
    """``documents`` or ``bytes`` when refused."""


def admit(key_id: str, rate: float, burst: int) -> Flow[RateDecision]:
    """Count one request of ``key_id`` against ``rate`` requests/s with ``burst``."""
    period = 1000.0 / rate
    allowed, remaining, retry_ms, reset_ms = yield RunScript(
        GCRA, (keys.rate_limit(key_id),), (repr(period), burst)
    )
    return RateDecision(
        allowed=bool(allowed),
        limit=burst,
        remaining=int(remaining),
        retry_after=math.ceil(int(retry_ms) / 1000),
        reset=math.ceil(int(reset_ms) / 1000),
        window=max(1, math.ceil(burst / rate)),
    )


def charge(
    key_id: str, documents: int, size: int, *, max_documents: int, max_bytes: int
) -> Flow[QuotaDecision]:
    """Add documents and bytes to today's use of ``key_id`` unless a limit would be
    crossed (then nothing is added). Negative amounts refund an aborted request."""
    allowed, docs, used, reset, exceeded = yield RunScript(
        QUOTA, (keys.daily_quota(key_id),), (documents, size, max_documents, max_bytes)
    )
    return QuotaDecision(bool(allowed), int(docs), int(used), int(reset), as_text(exceeded))


__all__ = ["QuotaDecision", "RateDecision", "admit", "charge"]
