"""Login: an API key buys a browser session (cookie), through the SessionManager.

``POST /v1/sessions`` takes the key as ``Authorization: Bearer``, as JSON
``{"api_key": ...}`` or as the login form's field, and sets the cookie ``crd_session``:
``HttpOnly``, ``SameSite=Strict`` (no other site can make the browser send it), ``Path=/``,
and ``Secure`` when the request came over TLS (directly or, with uvicorn's
``--forwarded-allow-ips``, through a proxy that says so). The session records the key
id, so revoking the key ends it; ``SESSION_BIND_IP`` binds it to the caller's IP.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from redundancy.api.apikeys import Principal
from redundancy.api.auth import (
    SESSION_COOKIE,
    SESSION_KEY_FIELD,
    admitted,
    authorized,
    bearer_key,
    client_ip,
)
from redundancy.api.errors import UnauthorizedError
from redundancy.api.models import ErrorBody, LoginRequest, SessionInfo

router = APIRouter()
FORM_TYPE = "application/x-www-form-urlencoded"


async def _key_from(request: Request) -> tuple[str | None, str | None]:
    """The key (header, JSON or form) and, for the form, where to go next."""
    key = bearer_key(request)
    if key:
        return key, None
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == FORM_TYPE:
        form = await request.form(max_files=0, max_fields=2)
        given, target = form.get("api_key"), form.get("next")
        return (str(given) if given else None), _local(str(target) if target else "/")
    raw = await request.body()
    if raw.strip():
        return LoginRequest.model_validate_json(raw).api_key, None
    return None, None


def _local(target: str) -> str:
    """Only same-site paths as a redirect target (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _info(user_id: str, key_id: str, session: Any) -> dict[str, Any]:
    return SessionInfo(
        user_id=user_id,
        key_id=key_id,
        expires_at=session.expires_at,
        max_until=session.max_until,
        bound_ip=session.bound_ip,
    ).model_dump(mode="json")


FORM_FIELDS = {"api_key": {"type": "string"}, "next": {"type": "string"}}
LOGIN_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            FORM_TYPE: {"schema": {"type": "object", "properties": FORM_FIELDS}},
        }
    }
}
Caller = Annotated[Principal, Depends(authorized)]


@router.post(
    "/v1/sessions",
    status_code=201,
    response_model=SessionInfo,
    responses={401: {"model": ErrorBody}, 429: {"model": ErrorBody}},
    openapi_extra=LOGIN_BODY,
)
async def login(request: Request) -> Response:
    """Exchange an API key for a session cookie (for the browser's results page)."""
    from redundancy.sessions import get_session_manager

    key, next_page = await _key_from(request)
    try:
        if not key:
            raise UnauthorizedError("send a valid API key (Authorization: Bearer, or api_key)")
        principal = await admitted(request, key=key)
    except UnauthorizedError as exc:
        if next_page is not None:
            return _login_page(next_page, str(exc), status=401)
        raise
    session = await get_session_manager().create_session(
        principal.user_id, client_ip(request), data={SESSION_KEY_FIELD: principal.key_id}
    )
    response: Response
    if next_page is not None:
        response = RedirectResponse(next_page, status_code=303)
    else:
        response = JSONResponse(_info(principal.user_id, principal.key_id, session), 201)
    response.set_cookie(
        SESSION_COOKIE,
        session.session_id,
        max_age=session.ttl,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get(
    "/v1/sessions/current", response_model=SessionInfo, responses={401: {"model": ErrorBody}}
)
async def current_session(request: Request, principal: Caller) -> dict[str, Any]:
    """The caller's session (401 when called with a key instead of the cookie)."""
    from redundancy.sessions import get_session_manager

    if principal.session_id is None:
        raise UnauthorizedError("no session: this request used an API key")
    session = await get_session_manager().get_session(principal.session_id, client_ip(request))
    if session is None:
        raise UnauthorizedError("the session ended")
    return _info(principal.user_id, principal.key_id, session)


@router.delete("/v1/sessions/current", status_code=204)
async def logout(request: Request, principal: Caller) -> Response:
    """End the caller's session (log out) and clear the cookie."""
    from redundancy.sessions import get_session_manager

    if principal.session_id is not None:
        await get_session_manager().delete_session(principal.session_id, client_ip(request))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(next: str = "/") -> HTMLResponse:
    return _login_page(_local(next))


def _login_page(next_page: str, problem: str = "", status: int = 200) -> HTMLResponse:
    note = f'<p role="alert">{html.escape(problem)}</p>' if problem else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in: content-redundancy-detector</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input{{width:100%;padding:.5rem;margin:.5rem 0;box-sizing:border-box}}
@media (prefers-color-scheme:dark){{body{{background:#111;color:#eee}}}}</style></head>
<body><h1>Log in</h1>{note}
<form method="post" action="/v1/sessions">
<label for="api_key">API key (from <code>crd keys create USER</code>)</label>
<input id="api_key" name="api_key" type="password" autocomplete="off" required>
<input type="hidden" name="next" value="{html.escape(next_page)}">
<button type="submit">Log in</button></form></body></html>"""
    return HTMLResponse(page, status_code=status)
