"""API keys: created for a user, shown once, stored only as a sha256 digest.

A key reads ``crd_<key id>_<secret>``: the key id (12 hex digits) is public -- it names
the key in ``crd keys list`` and in rate-limit state -- and the secret is 256 random
bits. A key is found by ``keys.api_key(sha256(key))``, a hash holding its id and user;
revoking deletes that hash, so the next request on any instance is refused
(``limits.admit`` checks the key in the same round trip as its rate limit). A plain
sha256 suffices
(no slow hash): the secret is random, not a password someone chose.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from redundancy import keys
from redundancy.kv import Flow, Pipeline, cmd
from redundancy.kv.ops import as_text
from redundancy.sessions.core import check_user_id

KEY_PREFIX = "crd_"
_KEY_SHAPE = re.compile(r"crd_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's user and id, and the session if a cookie was used."""

    user_id: str
    key_id: str
    session_id: str | None = None


class ApiKeyInfo(BaseModel):
    """What ``crd keys list`` shows of a key (never the key itself)."""

    key_id: str
    user_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_shape_ok(key: str) -> bool:
    """Shape check before any I/O: a malformed key cannot exist."""
    return _KEY_SHAPE.fullmatch(key) is not None


def key_id_of(key: str) -> str | None:
    """The public id inside a well-formed key (None for a malformed one). Only a guess
    until the key's digest is found holding the same id (``limits.admit`` checks)."""
    match = _KEY_SHAPE.fullmatch(key)
    return match.group(1) if match else None


def create(user_id: str, name: str = "") -> Flow[tuple[str, ApiKeyInfo]]:
    """A new key for ``user_id``: ``(the key, its info)``. The key is not stored."""
    check_user_id(user_id)
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    info = ApiKeyInfo(key_id=key_id, user_id=user_id, name=name, created_at=datetime.now(UTC))
    hashed = digest(key)
    yield Pipeline(
        (
            cmd("HSET", keys.api_key(hashed), "key_id", key_id, "user_id", user_id),
            cmd("SET", keys.api_key_id(key_id), hashed),
            cmd("HSET", keys.api_user_keys(user_id), key_id, info.model_dump_json()),
        ),
        transaction=True,
    )
    return key, info


def list_keys(user_id: str) -> Flow[list[ApiKeyInfo]]:
    """Every key the user was given, revoked ones included, oldest first."""
    stored = yield cmd("HGETALL", keys.api_user_keys(check_user_id(user_id)))
    infos = [ApiKeyInfo.model_validate_json(v) for v in _values(stored)]
    return sorted(infos, key=lambda i: i.created_at)


def revoke(user_id: str, key_id: str | None = None) -> Flow[list[str]]:
    """Revoke one key of ``user_id`` (or all of them); returns the ids revoked now."""
    infos = yield from list_keys(user_id)
    doomed = [i for i in infos if i.revoked_at is None and (key_id is None or i.key_id == key_id)]
    now = datetime.now(UTC)
    for info in doomed:
        hashed = yield cmd("GET", keys.api_key_id(info.key_id))
        revoked = info.model_copy(update={"revoked_at": now})
        gone = [keys.api_key_id(info.key_id)]
        if hashed is not None:
            gone.append(keys.api_key(as_text(hashed)))
        yield Pipeline(
            (
                cmd("UNLINK", *gone),
                cmd("HSET", keys.api_user_keys(user_id), info.key_id, revoked.model_dump_json()),
            ),
            transaction=True,
        )
    return [i.key_id for i in doomed]


def _values(reply: Any) -> list[str]:
    if isinstance(reply, dict):
        return [as_text(v) for v in reply.values()]
    return [as_text(v) for v in list(reply)[1::2]]


__all__ = [
    "ApiKeyInfo",
    "Principal",
    "create",
    "digest",
    "key_id_of",
    "list_keys",
    "revoke",
]
