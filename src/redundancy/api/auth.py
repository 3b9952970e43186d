"""Who is calling, and may they: API key or session cookie, then the key's rate limit.

* ``Authorization: Bearer crd_...`` -- looked up by digest on every request (no process
  cache), so a revoked key is refused by the next request on every instance.
* The session cookie (``crd_session``) made by ``POST /v1/sessions`` with a key: the
  session must exist (and match the caller's IP when bound) *and* the key it was made
  with must still be live, so revoking a key also ends the browser sessions it opened.

Then the key's GCRA limit is charged; its answer becomes the ``RateLimit-*`` headers of
the response (or a 429 with ``Retry-After``).
"""

from __future__ import annotations

import ipaddress

from fastapi import Request

from redundancy.api import apikeys, limits
from redundancy.api.apikeys import Principal
from redundancy.api.errors import RateLimitedError, UnauthorizedError
from redundancy.api.observability import STATE_PRINCIPAL, STATE_RATE_HEADERS
from redundancy.api.store import run
from redundancy.config import get_settings

SESSION_COOKIE = "crd_session"
SESSION_KEY_FIELD = "key_id"
"""Session data field naming the API key the session was opened with."""
BEARER = "bearer "


def client_ip(request: Request) -> str | None:
    """The caller's IP (behind a trusted proxy: the one it names), None if not an IP."""
    host = request.client.host if request.client else None
    try:
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[: len(BEARER)].lower() == BEARER:
        return header[len(BEARER) :].strip()
    return None


async def identify(request: Request) -> Principal:
    """The caller, or UnauthorizedError (401) with what is missing or wrong."""
    key = bearer_key(request)
    if key is not None:
        principal = await run(apikeys.lookup(key))
        if principal is None:
            raise UnauthorizedError("unknown or revoked API key")
        return principal
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        from redundancy.sessions import get_session_manager

        session = await get_session_manager().get_session(session_id, client_ip(request))
        key_id = session.data.get(SESSION_KEY_FIELD) if session else None
        if session is None or not isinstance(key_id, str) or not await run(apikeys.alive(key_id)):
            raise UnauthorizedError("the session ended or its API key was revoked: log in again")
        return Principal(session.user_id, key_id, session.session_id)
    raise UnauthorizedError(
        "authentication required: send 'Authorization: Bearer <API key>' or log in "
        "(POST /v1/sessions) for a session cookie"
    )


async def authorized(request: Request) -> Principal:
    """FastAPI dependency: identify the caller and charge one request to their key."""
    principal = await identify(request)
    await admit_request(request, principal)
    return principal


async def admit_request(request: Request, principal: Principal) -> None:
    """Charge one request to the caller's key: RateLimit-* headers, or 429."""
    setattr(request.state, STATE_PRINCIPAL, principal)
    settings = get_settings()
    decision = await run(
        limits.admit(principal.key_id, settings.api_rate_limit, settings.api_rate_burst)
    )
    setattr(request.state, STATE_RATE_HEADERS, decision.headers())
    if not decision.allowed:
        raise RateLimitedError(
            f"rate limit of {settings.api_rate_limit:g} requests/s (burst "
            f"{settings.api_rate_burst}) reached for key {principal.key_id}; retry in "
            f"{decision.retry_after} s",
            headers=decision.headers(),
        )


async def charge_quota(principal: Principal, documents: int, size: int) -> None:
    """Count documents and bytes against the key's daily quota, or 429 until tomorrow."""
    settings = get_settings()
    decision = await run(
        limits.charge(
            principal.key_id,
            documents,
            size,
            max_documents=settings.api_quota_documents,
            max_bytes=settings.api_quota_bytes,
        )
    )
    if not decision.allowed:
        limit = (
            f"{settings.api_quota_documents:,} documents"
            if decision.exceeded == "documents"
            else f"{settings.api_quota_bytes:,} bytes"
        )
        raise RateLimitedError(
            f"daily quota of {limit} for key {principal.key_id} would be exceeded (used "
            f"today: {decision.documents:,} documents, {decision.bytes:,} bytes; this "
            f"request: {documents:,} documents, {size:,} bytes); it resets at 00:00 UTC",
            headers={"Retry-After": str(decision.reset)},
        )


async def refund_quota(principal: Principal, documents: int, size: int) -> None:
    """Give back what an aborted request charged."""
    settings = get_settings()
    await run(
        limits.charge(
            principal.key_id,
            -documents,
            -size,
            max_documents=settings.api_quota_documents,
            max_bytes=settings.api_quota_bytes,
        )
    )


__all__ = ["SESSION_COOKIE", "authorized", "charge_quota", "client_ip", "identify"]
