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
from datetime import UTC, datetime
from typing import Any

from redundancy import keys
from redundancy.kv import Flow, RunScript, Script
from redundancy.kv.memory import script_twin
from redundancy.kv.ops import as_text

DAY_SECONDS = 86_400

# Lua pieces, composed into the scripts below (each runs whole, atomically).
_CLOCK = """
    local t = redis.call('TIME')
    local now = t[1] * 1000 + t[2] / 1000
    local day = math.floor(t[1] / 86400)
    local day_left = 86400 - t[1] % 86400
"""
_GCRA_CHECK = """
    local period, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
    local tolerance = period * burst
    local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
    if tat < now then tat = now end
    local new_tat = tat + period
    local rate_ok = new_tat - now <= tolerance
    local remaining, retry_at, reset_at = 0, new_tat - tolerance, tat
    if rate_ok then
        remaining = math.floor((tolerance - (new_tat - now)) / period)
        retry_at, reset_at = now, new_tat
    end
"""
_QUOTA_CHECK = """
    local q = redis.call('HMGET', KEYS[2], 'day', 'documents', 'bytes')
    local docs, size = 0, 0
    if tonumber(q[1]) == day then docs, size = tonumber(q[2]), tonumber(q[3]) end
    local add_docs, add_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
    local exceeded = ''
    if add_docs > 0 and docs + add_docs > tonumber(ARGV[5]) then exceeded = 'documents'
    elseif add_bytes > 0 and size + add_bytes > tonumber(ARGV[6]) then exceeded = 'bytes' end
"""
_QUOTA_COMMIT = """
    if add_docs ~= 0 or add_bytes ~= 0 then
        docs, size = math.max(0, docs + add_docs), math.max(0, size + add_bytes)
        redis.call('HSET', KEYS[2], 'day', day, 'documents', docs, 'bytes', size)
        redis.call('EXPIRE', KEYS[2], day_left)
    end
"""

ADMIT = Script(
    "api_admit",
    _CLOCK
    + """
    local user = ''
    if ARGV[7] == 'digest' then
        local f = redis.call('HMGET', KEYS[3], 'key_id', 'user_id')
        if not f[1] or f[1] ~= ARGV[8] then return {-1} end
        user = f[2]
    elseif redis.call('EXISTS', KEYS[3]) == 0 then
        return {-1}
    end
    """
    + _GCRA_CHECK
    + _QUOTA_CHECK
    + """
    local answer = {0, user, remaining, math.floor(now), math.ceil(retry_at), math.ceil(reset_at),
                    docs, size, ''}
    if not rate_ok then return answer end
    if exceeded ~= '' then
        answer[1], answer[9] = -2, exceeded
        return answer
    end
    redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now))
    """
    + _QUOTA_COMMIT
    + """
    if #ARGV >= 9 then
        if user == '' then user = ARGV[15] end
        redis.call('HSET', KEYS[4], 'user_id', user, 'kind', ARGV[10], 'created_at', ARGV[11],
                   'tasks', 1, 'documents', ARGV[12])
        redis.call('PEXPIRE', KEYS[4], ARGV[13])
        redis.call('RPUSH', KEYS[5], ARGV[9])
        redis.call('LTRIM', KEYS[5], -tonumber(ARGV[14]), -1)
        redis.call('PEXPIRE', KEYS[5], ARGV[13])
    end
    answer[1], answer[2], answer[7], answer[8] = 1, user, docs, size
    return answer
    """,
)
"""One request of one API key, in one round trip: the key is live (KEYS[3]: its digest
hash, whose ``key_id`` must be ARGV[8], or -- for a session -- its id key), it is within
its GCRA rate (KEYS[1]) and, if it brings documents, within today's quota (KEYS[2]).
Nothing is charged unless all hold. ARGV: period ms, burst, documents, bytes, documents
limit, bytes limit, ``digest`` or ``id``, key id. Answers {status (1 ok, 0 rate, -2
quota, -1 unknown key), user, remaining, now, when a refused request would pass, when the
full burst is back (all ms on the server's clock), documents used, bytes used, quota limit
hit}; times are absolute, so replies compare across servers (the twin's table). With a
job (ARGV 9..15: job id, kind, created at, documents, TTL ms, jobs kept per key, the
session's user), an admitted request
also records the job as the caller's (KEYS[4]: ``keys.api_job``, KEYS[5]: the key's
list), so a job exists for its owner before it is sent."""

QUOTA = Script(
    "api_quota",
    _CLOCK
    + _QUOTA_CHECK.replace("KEYS[2]", "KEYS[1]")
    + """
    if exceeded ~= '' then return {0, docs, size, math.floor(now), exceeded} end
    """
    + _QUOTA_COMMIT.replace("KEYS[2]", "KEYS[1]")
    + """
    return {1, docs, size, math.floor(now), ''}
    """,
)
"""Charge (or, negative, refund) documents and bytes as they stream in. ARGV as ADMIT's
(3..6 used; 1..2 are zeros). Answers {allowed, documents used, bytes used, now (ms),
limit hit}."""


# --- the in-memory twins (same steps, in Python, under the store's lock) -----------------


def _twin_clock(store: Any) -> tuple[float, int, int]:
    sec, usec = store.call("TIME")
    return (
        int(sec) * 1000 + int(usec) / 1000,
        int(sec) // DAY_SECONDS,
        DAY_SECONDS - int(sec) % DAY_SECONDS,
    )


def _twin_gcra(store: Any, key: bytes, now: float, a: list[bytes]) -> tuple[bool, list[Any], float]:
    period, burst = float(a[0]), float(a[1])
    tolerance = period * burst
    tat = max(float(store.call("GET", key) or 0), now)
    new_tat = tat + period
    if new_tat - now <= tolerance:
        remaining = math.floor((tolerance - (new_tat - now)) / period)
        return True, [remaining, math.floor(now), math.ceil(now), math.ceil(new_tat)], new_tat
    return False, [0, math.floor(now), math.ceil(new_tat - tolerance), math.ceil(tat)], new_tat


def _twin_quota(store: Any, key: bytes, day: int, a: list[bytes]) -> tuple[int, int, str]:
    stored = store.call("HGETALL", key)
    docs = size = 0
    if stored and int(stored[b"day"]) == day:
        docs, size = int(stored[b"documents"]), int(stored[b"bytes"])
    add_docs, add_bytes = int(a[2]), int(a[3])
    if add_docs > 0 and docs + add_docs > int(a[4]):
        return docs, size, "documents"
    if add_bytes > 0 and size + add_bytes > int(a[5]):
        return docs, size, "bytes"
    return docs, size, ""


def _twin_quota_commit(
    store: Any, key: bytes, day: int, left: int, a: list[bytes], docs: int, size: int
) -> tuple[int, int]:
    add_docs, add_bytes = int(a[2]), int(a[3])
    if add_docs or add_bytes:
        docs, size = max(0, docs + add_docs), max(0, size + add_bytes)
        store.call("HSET", key, "day", day, "documents", docs, "bytes", size)
        store.call("PEXPIRE", key, left * 1000)
    return docs, size


@script_twin(ADMIT.name)
def _admit_twin(store: Any, k: list[bytes], a: list[bytes]) -> list[Any]:
    now, day, left = _twin_clock(store)
    user: Any = b""
    if a[6] == b"digest":
        fields = store.call("HGETALL", k[2])
        if not fields or fields.get(b"key_id") != a[7]:
            return [-1]
        user = fields[b"user_id"]
    elif not store.call("EXISTS", k[2]):
        return [-1]
    rate_ok, rate, new_tat = _twin_gcra(store, k[0], now, a)
    docs, size, exceeded = _twin_quota(store, k[1], day, a)
    if not rate_ok:
        return [0, user, *rate, docs, size, b""]
    if exceeded:
        return [-2, user, *rate, docs, size, exceeded.encode()]
    store.call("SET", k[0], repr(new_tat), "PX", math.ceil(new_tat - now))
    docs, size = _twin_quota_commit(store, k[1], day, left, a, docs, size)
    if len(a) >= 9:
        user = user or a[14]
        store.call("HSET", k[3], "user_id", user, "kind", a[9], "created_at", a[10],
                   "tasks", 1, "documents", a[11])  # fmt: skip
        store.call("PEXPIRE", k[3], int(a[12]))
        store.call("RPUSH", k[4], a[8])
        store.call("LTRIM", k[4], -int(a[13]), -1)
        store.call("PEXPIRE", k[4], int(a[12]))
    return [1, user, *rate, docs, size, b""]


@script_twin(QUOTA.name)
def _quota_twin(store: Any, k: list[bytes], a: list[bytes]) -> list[Any]:
    now, day, left = _twin_clock(store)
    docs, size, exceeded = _twin_quota(store, k[0], day, a)
    if exceeded:
        return [0, docs, size, math.floor(now), exceeded.encode()]
    docs, size = _twin_quota_commit(store, k[0], day, left, a, docs, size)
    return [1, docs, size, math.floor(now), b""]


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


@dataclass(frozen=True)
class JobToRecord:
    """A single job to record as the caller's when its request is admitted."""

    job_id: str
    kind: str
    ttl: int
    keep: int
    """Job ids kept per key."""
    user_id: str = ""
    """The caller's user when known before the script (a session's)."""


@dataclass(frozen=True)
class Admission:
    """ADMIT's answer: whether the request may go on, who the key belongs to (by digest),
    and both decisions for the response headers."""

    status: int
    """1 admitted; 0 over the rate; -2 over the quota; -1 unknown or revoked key."""
    user_id: str
    rate: RateDecision
    quota: QuotaDecision


def admit(
    key_id: str,
    *,
    key_ref: str,
    by_digest: bool,
    rate: float,
    burst: int,
    documents: int = 0,
    size: int = 0,
    max_documents: int = 1,
    max_bytes: int = 1,
    job: JobToRecord | None = None,
) -> Flow[Admission]:
    """One request of ``key_id``: the key is live (``key_ref``: ``keys.api_key(digest)``
    when ``by_digest``, else ``keys.api_key_id(key_id)``), within ``rate`` requests/s with
    ``burst``, and within today's quota for ``documents``/``size`` -- one round trip,
    which also records ``job`` as the caller's when the request is admitted."""
    period = 1000.0 / rate
    mode = "digest" if by_digest else "id"
    script_keys: tuple[str, ...] = (keys.rate_limit(key_id), keys.daily_quota(key_id), key_ref)
    args: tuple[object, ...] = (repr(period), burst, documents, size, max_documents, max_bytes,
                                mode, key_id)  # fmt: skip
    if job is not None:
        script_keys += (keys.api_job(job.job_id), keys.api_key_jobs(key_id))
        created = datetime.now(UTC).isoformat()
        args += (job.job_id, job.kind, created, documents, job.ttl * 1000, job.keep,
                 job.user_id)  # fmt: skip
    reply = yield RunScript(ADMIT, script_keys, args)
    status = int(reply[0])
    if status == -1:
        return Admission(
            -1, "", RateDecision(False, burst, 0, 0, 0, 1), QuotaDecision(False, 0, 0, 0, "")
        )
    _, user, remaining, now, retry_at, reset_at, docs, used, exceeded = (
        x if i in (1, 8) else int(x) for i, x in enumerate(reply)
    )
    decision = RateDecision(
        allowed=status != 0,
        limit=burst,
        remaining=remaining,
        retry_after=max(0, math.ceil((retry_at - now) / 1000)),
        reset=max(0, math.ceil((reset_at - now) / 1000)),
        window=max(1, math.ceil(burst / rate)),
    )
    quota = QuotaDecision(status != -2, docs, used, _to_next_day(now), as_text(exceeded))
    return Admission(status, as_text(user), decision, quota)


def charge(
    key_id: str, documents: int, size: int, *, max_documents: int, max_bytes: int
) -> Flow[QuotaDecision]:
    """Add documents and bytes to today's use of ``key_id`` unless a limit would be
    crossed (then nothing is added). Negative amounts refund an aborted request."""
    allowed, docs, used, now, exceeded = yield RunScript(
        QUOTA, (keys.daily_quota(key_id),), (0, 0, documents, size, max_documents, max_bytes)
    )
    reset = _to_next_day(int(now))
    return QuotaDecision(bool(allowed), int(docs), int(used), reset, as_text(exceeded))


def _to_next_day(now_ms: int) -> int:
    """Seconds from ``now_ms`` (server clock) to the next UTC midnight."""
    return DAY_SECONDS - (now_ms // 1000) % DAY_SECONDS


__all__ = ["Admission", "JobToRecord", "QuotaDecision", "RateDecision", "admit", "charge"]
