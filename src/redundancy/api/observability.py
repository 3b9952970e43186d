"""The design's observability middleware: metrics, correlation id, access log, body limit.

One pure ASGI middleware (no BaseHTTPMiddleware: the correlation id must stay bound in
the context the route -- and every task it publishes -- runs in):

* ``X-Correlation-ID`` from the request (when well-formed) or a new one, bound for the
  request, so ``before_task_publish`` puts it in each task's ``crd_correlation_id``
  header, log records carry it, and it is echoed in the response;
* ``http_requests_total{method, endpoint, status_code}`` and
  ``http_request_duration_seconds{method, endpoint}``, where ``endpoint`` is the route
  *template* (``/v1/jobs/{job_id}``), never the raw path, so cardinality stays bounded;
* one access-log line per request (JSON with ``LOG_FORMAT=json``);
* the body limits: ``Content-Length`` above the limit is refused before the app runs,
  and a body that grows past it while streaming stops with 413;
* ``RateLimit-*`` headers of the caller's key on every answer (set by the auth step).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redundancy.api.errors import PayloadTooLargeError
from redundancy.observability.context import (
    bind_correlation_id,
    new_correlation_id,
    unbind_correlation_id,
    usable_correlation_id,
)
from redundancy.observability.metrics import SECONDS_BUCKETS

access_log = logging.getLogger("redundancy.api.access")

CORRELATION_HEADER = "X-Correlation-ID"
UNMATCHED = "unmatched"
"""``endpoint`` label of requests no route matched (404s of random paths)."""
STATE_RATE_HEADERS = "rate_headers"
STATE_PRINCIPAL = "principal"

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered by the API, by route template and status.",
    ("method", "endpoint", "status_code"),
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of the body), by route template.",
    ("method", "endpoint"),
    buckets=SECONDS_BUCKETS,
)


def correlation_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-correlation-id":
            given = usable_correlation_id(value.decode("latin-1").strip())
            if given is not None:
                return given
            break
    return new_correlation_id()


class GatewayMiddleware:
    """See the module docstring. ``max_body``: any request; ``max_json``: bodies that
    are parsed in memory (``application/json``, forms)."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_json: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_json = max_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = scope.get("headers", [])
        correlation_id = correlation_id_from(headers)
        token = bind_correlation_id(correlation_id)
        state = scope.setdefault("state", {})
        status = 500
        limit = self._limit(headers)

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                out = MutableHeaders(scope=message)
                out[CORRELATION_HEADER] = correlation_id
                for name, value in (state.get(STATE_RATE_HEADERS) or {}).items():
                    out[name] = value
            await send(message)

        received = 0

        async def receive_bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(_too_large(limit))
            return message

        try:
            declared = _content_length(headers)
            if declared is not None and declared > limit:
                await _refuse_too_large(limit, send_with_headers)
            else:
                await self.app(scope, receive_bounded, send_with_headers)
        finally:
            route = scope.get("route")
            # path_format: the template without converters ({doc_id}, not {doc_id:path}),
            # as the OpenAPI schema names it
            endpoint = getattr(route, "path_format", None) or UNMATCHED
            method = scope.get("method", "GET")
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(method, endpoint, str(status)).inc()
            HTTP_DURATION.labels(method, endpoint).observe(elapsed)
            _log_access(scope, state, method, endpoint, status, elapsed)
            unbind_correlation_id(token)

    def _limit(self, headers: list[tuple[bytes, bytes]]) -> int:
        for name, value in headers:
            if name == b"content-type":
                kind = value.split(b";", 1)[0].strip().lower()
                if kind in (b"application/json", b"application/x-www-form-urlencoded"):
                    return self.max_json
                break
        return self.max_body


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> str:
    return f"the request body exceeds the limit of {limit:,} bytes"


async def _refuse_too_large(limit: int, send: Send) -> None:
    import orjson

    from redundancy.api.errors import body

    payload = orjson.dumps(body(PayloadTooLargeError(_too_large(limit))))
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _log_access(
    scope: Scope, state: dict[str, Any], method: str, endpoint: str, status: int, elapsed: float
) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    principal = state.get(STATE_PRINCIPAL)
    client = scope.get("client")
    access_log.info(
        "%s %s %s %.1f ms",
        method,
        scope.get("path", ""),
        status,
        elapsed * 1000,
        extra={
            "http_method": method,
            "http_path": scope.get("path", ""),
            "http_endpoint": endpoint,
            "http_status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "client_ip": client[0] if client else None,
            "user_id": getattr(principal, "user_id", None),
        },
    )


__all__ = ["CORRELATION_HEADER", "HTTP_DURATION", "HTTP_REQUESTS", "GatewayMiddleware"]
