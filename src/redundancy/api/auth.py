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

from redundancy import keys
from redundancy.api import apikeys, limits
from redundancy.api.apikeys import Principal
from redundancy.api.errors import RateLimitedError, UnauthorizedError
from redundancy.api.jobs import MAX_KEY_JOBS
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


async def admitted(
    request: Request,
    *,
    key: str | None = None,
    documents: int = 0,
    size: int = 0,
    job: tuple[str, str] | None = None,
) -> Principal:
    """The caller, admitted: a live key (``key``, else the Bearer header, else the
    session cookie's), within its rate limit and -- for ``documents``/``size`` -- today's
    quota, all checked and charged in one round trip (``limits.admit``) -- which also
    records ``job`` (id, kind) as the caller's. Raises UnauthorizedError (401) or
    RateLimitedError (429 with Retry-After)."""
    settings = get_settings()
    key = key if key is not None else bearer_key(request)
    session_id: str | None = None
    user_id = ""
    if key is not None:
        key_id = apikeys.key_id_of(key)
        if key_id is None:
            raise UnauthorizedError("unknown or revoked API key")
        ref, by_digest = keys.api_key(apikeys.digest(key)), True
    elif session_cookie := request.cookies.get(SESSION_COOKIE):
        from redundancy.sessions import get_session_manager

        session = await get_session_manager().get_session(session_cookie, client_ip(request))
        found = session.data.get(SESSION_KEY_FIELD) if session else None
        if session is None or not isinstance(found, str):
            raise UnauthorizedError(ENDED)
        key_id, session_id, user_id = found, session.session_id, session.user_id
        ref, by_digest = keys.api_key_id(key_id), False
    else:
        raise UnauthorizedError(
            "authentication required: send 'Authorization: Bearer <API key>' or log in "
            "(POST /v1/sessions) for a session cookie"
        )
    admission = await run(
        limits.admit(
            key_id,
            key_ref=ref,
            by_digest=by_digest,
            rate=settings.api_rate_limit,
            burst=settings.api_rate_burst,
            documents=documents,
            size=size,
            max_documents=settings.api_quota_documents,
            max_bytes=settings.api_quota_bytes,
            job=None
            if job is None
            else limits.JobToRecord(job[0], job[1], settings.batch_ttl, MAX_KEY_JOBS, user_id),
        )
    )
    if admission.status == -1:
        raise UnauthorizedError(ENDED if session_id else "unknown or revoked API key")
    principal = Principal(user_id or admission.user_id, key_id, session_id)
    setattr(request.state, STATE_PRINCIPAL, principal)
    headers = admission.rate.headers()
    setattr(request.state, STATE_RATE_HEADERS, headers)
    if admission.status == 0:
        raise RateLimitedError(
            f"rate limit of {settings.api_rate_limit:g} requests/s (burst "
            f"{settings.api_rate_burst}) reached for key {key_id}; retry in "
            f"{admission.rate.retry_after} s",
            headers=headers,
        )
    if admission.status == -2:
        raise quota_exceeded(principal, admission.quota, documents, size)
    return principal


ENDED = "the session ended or its API key was revoked: log in again"


async def authorized(request: Request) -> Principal:
    """FastAPI dependency: the caller, admitted for one request (no documents)."""
    return await admitted(request)


def quota_exceeded(
    principal: Principal, quota: limits.QuotaDecision, documents: int, size: int
) -> RateLimitedError:
    settings = get_settings()
    limit = (
        f"{settings.api_quota_documents:,} documents"
        if quota.exceeded == "documents"
        else f"{settings.api_quota_bytes:,} bytes"
    )
    return RateLimitedError(
        f"daily quota of {limit} for key {principal.key_id} would be exceeded (used "
        f"today: {quota.documents:,} documents, {quota.bytes:,} bytes; this request: "
        f"{documents:,} documents, {size:,} bytes); it resets at 00:00 UTC",
        headers={"Retry-After": str(quota.reset)},
    )


async def charge_quota(principal: Principal, documents: int, size: int) -> None:
    """Count documents and bytes against the key's daily quota, or 429 until tomorrow
    (for batches, whose size is known only once read)."""
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
        raise quota_exceeded(principal, decision, documents, size)


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


__all__ = ["SESSION_COOKIE", "admitted", "authorized", "charge_quota", "client_ip"]
