"""``create_api()``: the ASGI app of the HTTP gateway (README, "HTTP API").

    request -> GatewayMiddleware (correlation id, metrics, access log, body limits)
            -> OpenTelemetry's FastAPI instrumentation (a SERVER span; tasks become children)
            -> route: authorized (key or session, rate limit) -> quota -> task -> 202

Errors of ours become ``{"error": {"type", "message"}}`` with the status their class
stands for (``redundancy.api.errors.status_of``); invalid input is a 422 whose message
lists every problem in one line.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from redundancy import __version__
from redundancy.api import errors
from redundancy.api.observability import GatewayMiddleware, access_log
from redundancy.config import get_settings
from redundancy.errors import InvalidInputError, RedundancyError

DESCRIPTION = """Find redundant and near-duplicate text over HTTP.

Authenticate with `Authorization: Bearer <API key>` (from `crd keys create USER`) or a
session cookie (`POST /v1/sessions`). Jobs answer `202` with a `Location`; poll
`GET /v1/jobs/{id}` or stream `GET /v1/jobs/{id}/events`. Every answer carries
`X-Correlation-ID` and `RateLimit-*` headers; over a limit: `429` + `Retry-After`."""
UNTRACED = "/metrics,/healthz,/readyz"


def create_api() -> FastAPI:
    """Build the app (one per process: uvicorn workers each call this)."""
    from redundancy.api import corpora, pages, routes, sessions
    from redundancy.observability.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_format, "WARNING")
    access_log.setLevel("INFO")  # one line per request; libraries stay at WARNING
    import redundancy.tasks  # noqa: F401  (builds the Celery app: producer hooks, tracing; its tasks)

    app = FastAPI(
        title="content-redundancy-detector",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    app.include_router(routes.ops)
    app.include_router(routes.v1)
    app.include_router(corpora.router)
    app.include_router(sessions.router)
    app.include_router(pages.router)
    app.add_exception_handler(RedundancyError, _our_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    _instrument(app)
    app.add_middleware(
        GatewayMiddleware,
        max_body=settings.api_max_body_bytes,
        max_json=settings.api_max_json_bytes,
    )
    return app


async def _our_error(request: Request, exc: Exception) -> JSONResponse:
    status = errors.status_of(exc)
    headers = getattr(exc, "headers", None) or {}
    return JSONResponse(errors.body(exc), status_code=status, headers=headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    problems = exc.errors() if isinstance(exc, RequestValidationError) else []
    error = InvalidInputError(f"invalid request: {errors.readable(list(problems))}")
    detail = [{k: v for k, v in p.items() if k in ("loc", "msg", "type")} for p in problems]
    return JSONResponse(errors.body(error, detail), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc.__cause__, RedundancyError):
        # FastAPI wraps any error raised while it reads a JSON body (our body limit
        # among them) in a 400 "error parsing the body": answer the real one.
        return await _our_error(request, exc.__cause__)
    status = getattr(exc, "status_code", 500)
    message = str(getattr(exc, "detail", "") or "error")
    kind = {404: "NotFoundError", 405: "MethodNotAllowedError"}.get(status, "HTTPError")
    body = {"error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=getattr(exc, "headers", None))


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the batch request's models (declared by hand: the route
    reads its body itself to accept JSON, JSONL and uploads)."""
    if app.openapi_schema:
        return app.openapi_schema
    from redundancy.api.models import BatchRequest

    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    extra = BatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(extra.pop("$defs", {}))
    components["BatchRequest"] = extra
    app.openapi_schema = schema
    return schema


def _instrument(app: FastAPI) -> None:
    """A SERVER span per request when tracing is on: the task's publish span becomes its
    child, so one trace runs HTTP request -> task -> event."""
    from redundancy.observability.tracing import tracer_provider

    provider = tracer_provider()
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=UNTRACED,
        exclude_spans=["receive", "send"],  # a span per body chunk costs more than it tells
    )


__all__ = ["create_api"]
