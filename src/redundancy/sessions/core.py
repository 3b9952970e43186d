"""Session logic, written once as flows (``redundancy.kv``) and Lua scripts.

Layout (``redundancy.keys``): one hash per session -- ``m:<fact>`` fields (user, IP,
binding, idle TTL, times) and ``d:<key>`` JSON values of the caller's data -- a list of
the session's job ids, and per user a sorted set of session ids scored by the session's
absolute end (``max_until``), so a user's index never outlives its last session.

Every read-check-write runs in one Lua script on the server's clock (``TIME``): merges
from any number of processes are atomic (no update is ever lost), the IP check and the
sliding refresh cannot race a delete, and hosts with skewed clocks agree. The in-memory
twin runs Python copies of the scripts, line for line, under its lock (proven to answer
as Redis does by one shared table of cases, see ``redundancy.kv.memory``).
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from redundancy import keys
from redundancy.core.text import validate_identifier
from redundancy.errors import InfrastructureError, InvalidInputError, RedundancyError
from redundancy.kv.memory import script_twin
from redundancy.kv.ops import Flow, Pipeline, RunScript, Script, as_text, cmd

SESSION_ID_BYTES: Final = 32
"""256 random bits from ``secrets`` (docs/architecture.md §7), URL-safe base64: 43 characters."""
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_USER_ID = 256
META, DATA = "m:", "d:"


class SessionError(RedundancyError):
    """Root of the session errors."""


class SessionRefusedError(SessionError):
    """The session is bound to another IP address than the caller's."""


class SessionStoreUnavailableError(SessionError, InfrastructureError):
    """The sessions' Redis did not answer (sessions never fail open: they guard access)."""


class Session(BaseModel):
    """A session as read from the store (a snapshot: ``update_session`` changes the store)."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    user_id: str
    ip_address: str | None = Field(description="the creator's IP, if given")
    bound_ip: bool = Field(description="lookups must come from ip_address")
    ttl: int = Field(description="idle timeout (s): each access extends the session by this")
    created_at: datetime
    last_seen: datetime
    expires_at: datetime = Field(description="when it ends unless used again (UTC)")
    max_until: datetime = Field(description="absolute end, whatever the activity (UTC)")
    data: dict[str, Any]


# --- Lua scripts and their in-memory twins -----------------------------------------------

_NOW = "local t = redis.call('TIME')\nlocal now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

CREATE = Script(
    "session_create",
    _NOW
    + """
    local ttl_ms = tonumber(ARGV[5]) * 1000
    local life_ms = tonumber(ARGV[6]) * 1000
    local max_until = now + life_ms
    local expires = math.min(now + ttl_ms, max_until)
    redis.call('HSET', KEYS[1], 'm:user_id', ARGV[2], 'm:ip', ARGV[3], 'm:bind', ARGV[4],
               'm:ttl', ARGV[5], 'm:created', now, 'm:last_seen', now, 'm:max_until', max_until)
    for i = 7, #ARGV, 2 do
        redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    end
    redis.call('PEXPIRE', KEYS[1], expires - now)
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    redis.call('ZADD', KEYS[2], max_until, ARGV[1])
    redis.call('PEXPIRE', KEYS[2], life_ms)
    return now
    """,
)


@script_twin(CREATE.name)
def _create_twin(store: Any, k: list[bytes], a: list[bytes]) -> int:
    now = _twin_now(store)
    ttl_ms, life_ms = int(a[4]) * 1000, int(a[5]) * 1000
    max_until = now + life_ms
    expires = min(now + ttl_ms, max_until)
    store.call(
        "HSET",
        k[0],
        "m:user_id",
        a[1],
        "m:ip",
        a[2],
        "m:bind",
        a[3],
        "m:ttl",
        a[4],
        "m:created",
        now,
        "m:last_seen",
        now,
        "m:max_until",
        max_until,
    )
    for i in range(6, len(a), 2):
        store.call("HSET", k[0], a[i], a[i + 1])
    store.call("PEXPIRE", k[0], expires - now)
    store.call("ZREMRANGEBYSCORE", k[1], "-inf", now)
    store.call("ZADD", k[1], max_until, a[0])
    store.call("PEXPIRE", k[1], life_ms)
    return now


_REFRESH = """
    local expires = math.min(now + tonumber(m['m:ttl']) * 1000, tonumber(m['m:max_until']))
    if expires <= now then
        redis.call('DEL', KEYS[1], KEYS[2])
        return false
    end
    redis.call('HSET', KEYS[1], 'm:last_seen', now)
    redis.call('PEXPIRE', KEYS[1], expires - now)
    redis.call('PEXPIRE', KEYS[2], expires - now)
"""

GET = Script(
    "session_get",
    """
    local h = redis.call('HGETALL', KEYS[1])
    if #h == 0 then return false end
    local m = {}
    for i = 1, #h, 2 do m[h[i]] = h[i + 1] end
    if m['m:bind'] == '1' and m['m:ip'] ~= ARGV[1] then return {'refused'} end
    if ARGV[2] == '1' then
    """
    + _NOW
    + _REFRESH
    + """
        h = redis.call('HGETALL', KEYS[1])
    end
    table.insert(h, 1, 'ok')
    return h
    """,
)


def _twin_refresh(store: Any, k: list[bytes], m: dict[bytes, bytes]) -> bool:
    now = _twin_now(store)
    expires = min(now + int(m[b"m:ttl"]) * 1000, int(m[b"m:max_until"]))
    if expires <= now:
        store.call("DEL", k[0], k[1])
        return False
    store.call("HSET", k[0], "m:last_seen", now)
    store.call("PEXPIRE", k[0], expires - now)
    store.call("PEXPIRE", k[1], expires - now)
    return True


@script_twin(GET.name)
def _get_twin(store: Any, k: list[bytes], a: list[bytes]) -> Any:
    m = store.call("HGETALL", k[0])
    if not m:
        return None
    if m.get(b"m:bind") == b"1" and m.get(b"m:ip") != a[0]:
        return [b"refused"]
    if a[1] == b"1":
        if not _twin_refresh(store, k, m):
            return None
        m = store.call("HGETALL", k[0])
    return [b"ok", *(x for pair in m.items() for x in pair)]


# IP binding guards every operation on a session, not only reads: the scripts that
# change one check the caller's IP (ARGV[1]) first and answer -1 when it is refused.
_BOUND_ELSEWHERE = "m['m:bind'] == '1' and m['m:ip'] ~= ARGV[1]"

UPDATE = Script(
    "session_update",
    """
    local h = redis.call('HGETALL', KEYS[1])
    if #h == 0 then return 0 end
    local m = {}
    for i = 1, #h, 2 do m[h[i]] = h[i + 1] end
    """
    + f"if {_BOUND_ELSEWHERE} then return -1 end\n"
    + _NOW
    + _REFRESH
    + """
    for i = 2, #ARGV, 2 do
        redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    end
    return 1
    """,
)


def _twin_bound_elsewhere(m: dict[bytes, bytes], ip: bytes) -> bool:
    return m.get(b"m:bind") == b"1" and m.get(b"m:ip") != ip


@script_twin(UPDATE.name)
def _update_twin(store: Any, k: list[bytes], a: list[bytes]) -> int | None:
    m = store.call("HGETALL", k[0])
    if not m:
        return 0
    if _twin_bound_elsewhere(m, a[0]):
        return -1
    if not _twin_refresh(store, k, m):
        return None  # the Lua's ``return false`` in _REFRESH
    for i in range(1, len(a), 2):
        store.call("HSET", k[0], a[i], a[i + 1])
    return 1


ADD_JOB = Script(
    "session_add_job",
    """
    local pttl = redis.call('PTTL', KEYS[1])
    if pttl <= 0 then return 0 end
    local f = redis.call('HMGET', KEYS[1], 'm:bind', 'm:ip')
    if f[1] == '1' and f[2] ~= ARGV[1] then return -1 end
    redis.call('RPUSH', KEYS[2], ARGV[2])
    redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
    redis.call('PEXPIRE', KEYS[2], pttl)
    return 1
    """,
)


@script_twin(ADD_JOB.name)
def _add_job_twin(store: Any, k: list[bytes], a: list[bytes]) -> int:
    pttl = store.call("PTTL", k[0])
    if pttl <= 0:
        return 0
    if _twin_bound_elsewhere(store.call("HGETALL", k[0]), a[0]):
        return -1
    store.call("RPUSH", k[1], a[1])
    store.call("LTRIM", k[1], -int(a[2]), -1)
    store.call("PEXPIRE", k[1], pttl)
    return 1


def _twin_now(store: Any) -> int:
    sec, usec = store.call("TIME")
    return int(sec) * 1000 + int(usec) // 1000


# --- validation and decoding ---------------------------------------------------------------


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def valid_session_id(session_id: object) -> bool:
    """Shape check before any I/O: a malformed id cannot exist."""
    return isinstance(session_id, str) and _SESSION_ID.fullmatch(session_id) is not None


def normalise_ip(ip: str | None) -> str | None:
    if ip is None:
        return None
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except (ValueError, AttributeError):
        raise InvalidInputError(f"ip_address must be an IPv4 or IPv6 address, got {ip!r}") from None


def check_user_id(user_id: object) -> str:
    return validate_identifier(user_id, name="user_id", max_chars=MAX_USER_ID)


def data_pairs(data: dict[str, Any] | None) -> list[str | bytes]:
    """``d:<key>``, JSON value, ... for HSET (keys must be strings; values JSON)."""
    out: list[str | bytes] = []
    for key, value in (data or {}).items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"session data keys must be non-empty strings, got {key!r}")
        try:
            out += [DATA + key, json.dumps(value, separators=(",", ":"), allow_nan=False)]
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"session data {key!r} is not JSON: {exc}") from None
    return out


def _ms(value: Any) -> datetime:
    return datetime.fromtimestamp(int(as_text(value)) / 1000, tz=UTC)


def decode_session(session_id: str, flat: list[Any]) -> Session:
    fields = {as_text(f): v for f, v in zip(flat[::2], flat[1::2], strict=True)}
    ttl = int(as_text(fields["m:ttl"]))
    last_seen, max_until = _ms(fields["m:last_seen"]), _ms(fields["m:max_until"])
    ip = as_text(fields.get("m:ip", b""))
    return Session(
        session_id=session_id,
        user_id=as_text(fields["m:user_id"]),
        ip_address=ip or None,
        bound_ip=as_text(fields.get("m:bind", b"0")) == "1",
        ttl=ttl,
        created_at=_ms(fields["m:created"]),
        last_seen=last_seen,
        expires_at=min(datetime.fromtimestamp(last_seen.timestamp() + ttl, tz=UTC), max_until),
        max_until=max_until,
        data={f[len(DATA) :]: json.loads(v) for f, v in fields.items() if f.startswith(DATA)},
    )


def _flat(reply: Any) -> list[Any]:
    """HGETALL replies arrive as a dict (redis-py) or a flat list (inside scripts)."""
    if isinstance(reply, dict):
        return [x for pair in reply.items() for x in pair]
    return list(reply)


def _allowed(reply: Any) -> bool:
    """A script's answer: 1 done, 0 (or nil: it just expired) gone, -1 bound to another IP."""
    if reply is None:
        return False
    if int(reply) < 0:
        raise SessionRefusedError("this session is bound to another IP address")
    return bool(reply)


def _check_ip(bind: Any, stored_ip: Any, ip_address: str | None) -> None:
    bound = bind is not None and as_text(bind) == "1"
    if bound and as_text(stored_ip or b"") != (normalise_ip(ip_address) or ""):
        raise SessionRefusedError("this session is bound to another IP address")


# --- flows ----------------------------------------------------------------------------------


class SessionCore:
    """Policy (TTL limits, IP binding, job list size) and the flows of the manager."""

    def __init__(
        self,
        *,
        default_ttl: int,
        max_ttl: int,
        max_lifetime: int,
        bind_ip: bool,
        max_jobs: int,
    ) -> None:
        if not 0 < default_ttl <= max_ttl <= max_lifetime:
            raise ValueError(
                "expected 0 < default_ttl <= max_ttl <= max_lifetime, got "
                f"{default_ttl}, {max_ttl}, {max_lifetime}"
            )
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.max_lifetime = max_lifetime
        self.bind_ip = bind_ip
        self.max_jobs = max_jobs

    def create(
        self,
        user_id: str,
        ip_address: str | None,
        ttl: int | None,
        data: dict[str, Any] | None,
        bind_ip: bool | None,
    ) -> Flow[Session]:
        user_id = check_user_id(user_id)
        ip = normalise_ip(ip_address)
        ttl = self.default_ttl if ttl is None else ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= self.max_ttl:
            raise InvalidInputError(
                f"ttl must be a whole number of seconds in 1..{self.max_ttl} "
                f"(SESSION_MAX_TTL), got {ttl!r}"
            )
        bind = self.bind_ip if bind_ip is None else bind_ip
        if bind and ip is None:
            raise InvalidInputError("an IP-bound session needs the creator's ip_address")
        session_id = new_session_id()
        args = (
            session_id,
            user_id,
            ip or "",
            "1" if bind else "0",
            ttl,
            self.max_lifetime,
            *data_pairs(data),
        )
        now_ms = yield RunScript(
            CREATE, (keys.session(session_id), keys.user_sessions(user_id)), args
        )
        now = _ms(now_ms)
        max_until = _ms(int(now_ms) + self.max_lifetime * 1000)
        return Session(
            session_id=session_id,
            user_id=user_id,
            ip_address=ip,
            bound_ip=bind,
            ttl=ttl,
            created_at=now,
            last_seen=now,
            expires_at=min(_ms(int(now_ms) + ttl * 1000), max_until),
            max_until=max_until,
            data=dict(data or {}),
        )

    def get(self, session_id: str, ip_address: str | None, refresh: bool) -> Flow[Session | None]:
        """The session, extended by its idle TTL (``refresh``); None when absent/expired.

        A session bound to an IP refuses a lookup without that IP (SessionRefusedError).
        """
        if not valid_session_id(session_id):
            return None
        ip = normalise_ip(ip_address) or ""
        reply = yield RunScript(
            GET,
            (keys.session(session_id), keys.session_jobs(session_id)),
            (ip, "1" if refresh else "0"),
        )
        if reply is None:
            return None
        if as_text(reply[0]) == "refused":
            raise SessionRefusedError("this session is bound to another IP address")
        return decode_session(session_id, reply[1:])

    def update(
        self, session_id: str, data: dict[str, Any], ip_address: str | None = None
    ) -> Flow[bool]:
        """Merge ``data`` into the session's data (atomic) and refresh it; False if gone."""
        pairs = data_pairs(data)
        if not valid_session_id(session_id):
            return False
        done = yield RunScript(
            UPDATE,
            (keys.session(session_id), keys.session_jobs(session_id)),
            (normalise_ip(ip_address) or "", *pairs),
        )
        return _allowed(done)

    def delete(self, session_id: str, ip_address: str | None = None) -> Flow[bool]:
        if not valid_session_id(session_id):
            return False
        user, bind, ip = yield cmd(
            "HMGET", keys.session(session_id), META + "user_id", META + "bind", META + "ip"
        )
        if user is None:
            return False
        _check_ip(bind, ip, ip_address)
        removed, _ = yield Pipeline(
            (
                cmd("UNLINK", keys.session(session_id), keys.session_jobs(session_id)),
                cmd("ZREM", keys.user_sessions(as_text(user)), session_id),
            ),
            transaction=True,
        )
        return int(removed) > 0

    def add_job(self, session_id: str, job_id: str, ip_address: str | None = None) -> Flow[bool]:
        if not isinstance(job_id, str) or not job_id:
            raise InvalidInputError(f"job_id must be a non-empty string, got {job_id!r}")
        if not valid_session_id(session_id):
            return False
        done = yield RunScript(
            ADD_JOB,
            (keys.session(session_id), keys.session_jobs(session_id)),
            (normalise_ip(ip_address) or "", job_id, self.max_jobs),
        )
        return _allowed(done)

    def list_jobs(self, session_id: str, ip_address: str | None = None) -> Flow[list[str]]:
        if not valid_session_id(session_id):
            return []
        (bind, ip), ids = yield Pipeline(
            (
                cmd("HMGET", keys.session(session_id), META + "bind", META + "ip"),
                cmd("LRANGE", keys.session_jobs(session_id), 0, -1),
            ),
            transaction=True,
        )
        _check_ip(bind, ip, ip_address)
        return [as_text(i) for i in ids]

    def list_sessions(self, user_id: str) -> Flow[list[Session]]:
        """The user's live sessions, oldest first (no refresh, no IP check: server side).

        Index entries of sessions that ended (idle timeout, delete) are pruned here."""
        index = keys.user_sessions(check_user_id(user_id))
        sec, usec = yield cmd("TIME")
        now = int(sec) * 1000 + int(usec) // 1000
        _, ids = yield Pipeline(
            (
                cmd("ZREMRANGEBYSCORE", index, "-inf", now),
                cmd("ZRANGEBYSCORE", index, "-inf", "+inf"),
            )
        )
        ids = [as_text(i) for i in ids]
        if not ids:
            return []
        replies = yield Pipeline(tuple(cmd("HGETALL", keys.session(i)) for i in ids))
        found, gone = [], []
        for sid, reply in zip(ids, replies, strict=True):
            flat = _flat(reply)
            if flat:
                found.append(decode_session(sid, flat))
            else:
                gone.append(sid)
        if gone:
            yield cmd("ZREM", index, *gone)
        return sorted(found, key=lambda s: s.created_at)

    def revoke_all(self, user_id: str) -> Flow[int]:
        """Delete every session of ``user_id``; returns how many existed."""
        index = keys.user_sessions(check_user_id(user_id))
        ids = [as_text(i) for i in (yield cmd("ZRANGEBYSCORE", index, "-inf", "+inf"))]
        if not ids:
            return 0
        doomed = [k for i in ids for k in (keys.session(i), keys.session_jobs(i))]
        sessions_alive, *_ = yield Pipeline(
            (
                cmd("EXISTS", *(keys.session(i) for i in ids)),
                cmd("UNLINK", *doomed),
                cmd("ZREM", index, *ids),
            ),
            transaction=True,
        )
        return int(sessions_alive)
