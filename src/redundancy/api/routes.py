"""The versioned JSON endpoints (``/v1``), health and metrics.

Every ``/v1`` route but the login runs ``authorized`` first (key or session, then the
key's rate limit). Blocking work -- publishing to the broker, reading Celery's result
backend, staging a batch -- runs in a worker thread, which inherits the request's
context: its correlation id and trace reach every task it sends.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

import anyio
import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from redundancy.api import intake, jobs
from redundancy.api.apikeys import Principal
from redundancy.api.auth import admitted, authorized, charge_quota, client_ip, refund_quota
from redundancy.api.errors import ConflictError, NotFoundError, ServiceUnavailableError
from redundancy.api.models import (
    AnalyzeRequest,
    CompareRequest,
    ErrorBody,
    Health,
    JobAccepted,
    JobList,
    JobStatus,
)
from redundancy.api.store import run
from redundancy.config import get_settings
from redundancy.errors import RedundancyError

log = logging.getLogger(__name__)

FINISHED = ("succeeded", "failed", "revoked")
EVENTS_POLL_SECONDS = 0.25
EVENTS_PING_SECONDS = 15
DEFAULT_PAGE = 100
MAX_PAGE = 1000

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no, unknown or revoked API key / session"},
    422: {"model": ErrorBody, "description": "invalid input, with a readable message"},
    429: {"model": ErrorBody, "description": "rate limit or daily quota (see Retry-After)"},
}

v1 = APIRouter(prefix="/v1", responses=ERRORS)
ops = APIRouter()

Caller = Annotated[Principal, Depends(authorized)]


def links(job_id: str, kind: str) -> dict[str, Any]:
    return {
        "status": f"/v1/jobs/{job_id}",
        "events": f"/v1/jobs/{job_id}/events",
        "page": f"/batches/{job_id}" if kind == "batch" else None,
    }


def utf8_size(*texts: str) -> int:
    return sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)


async def _record(
    request: Request, principal: Principal, job_id: str, kind: jobs.JobKind, **sizes: int
) -> None:
    ttl = get_settings().batch_ttl
    await run(jobs.record(job_id, principal.user_id, principal.key_id, kind, ttl=ttl, **sizes))
    await _in_session(request, principal, job_id)


async def _in_session(request: Request, principal: Principal, job_id: str) -> None:
    """Add the job to the caller's session's list too (the key's list is the record: a
    failure here is logged, never the request's, whose job is already sent)."""
    if principal.session_id:
        from redundancy.sessions import SessionError, get_session_manager

        try:
            await get_session_manager().add_job(principal.session_id, job_id, client_ip(request))
        except SessionError:
            log.warning("could not add job %s to its session", job_id, exc_info=True)


def accepted(job_id: str, kind: jobs.JobKind, documents: int) -> JSONResponse:
    body = JobAccepted(
        job_id=job_id, kind=kind, state="queued", documents=documents, links=links(job_id, kind)
    )
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/v1/jobs/{job_id}"},
    )


async def _submit_single(
    request: Request,
    kind: jobs.JobKind,
    task_name: str,
    kwargs: dict[str, Any],
    size: int,
    wait: float | None,
) -> Response:
    from redundancy.workers import app

    job_id = uuid.uuid4().hex
    principal = await admitted(request, documents=1, size=size, job=(job_id, kind))
    task = app.tasks[task_name]
    try:
        await anyio.to_thread.run_sync(
            lambda: send(lambda: task.apply_async(kwargs=kwargs, task_id=job_id))
        )
    except Exception:
        await refund_quota(principal, 1, size)
        await run(jobs.forget(job_id))
        raise
    await _in_session(request, principal, job_id)
    if wait:
        job = jobs.JobRecord(job_id, principal.user_id, kind, _now(), 1, 1)
        timeout = min(wait, get_settings().api_max_wait)
        snap = await anyio.to_thread.run_sync(jobs.wait_finished, job, timeout)
        if snap.state in FINISHED:
            return JSONResponse(status_body(job, snap, 0, DEFAULT_PAGE))
    return accepted(job_id, kind, 1)


def send(publish: Any) -> Any:
    """Publish (blocking), a broker failure answered as 503 (ours, retryable), not 500."""
    try:
        return publish()
    except Exception as exc:
        if isinstance(exc, RedundancyError):
            raise
        raise ServiceUnavailableError(
            f"the broker did not take the job: {type(exc).__name__}: {exc}"
        ) from exc


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


Wait = Annotated[
    float | None,
    Query(ge=0, description="seconds to wait for the result (at most API_MAX_WAIT)"),
]


@v1.post(
    "/analyses",
    status_code=202,
    response_model=JobAccepted,
    responses={200: {"model": JobStatus, "description": "finished within ?wait="}},
)
async def submit_analysis(request: Request, body: AnalyzeRequest, wait: Wait = None) -> Response:
    """How much one text repeats itself (``redundancy.analyze_content``)."""
    from redundancy.workers.routing import ANALYZE_CONTENT

    kwargs = body.model_dump()
    return await _submit_single(
        request, "analysis", ANALYZE_CONTENT, kwargs, utf8_size(body.text), wait
    )


@v1.post(
    "/comparisons",
    status_code=202,
    response_model=JobAccepted,
    responses={200: {"model": JobStatus, "description": "finished within ?wait="}},
)
async def submit_comparison(request: Request, body: CompareRequest, wait: Wait = None) -> Response:
    """Similarity of two texts (``redundancy.compare_texts``)."""
    from redundancy.workers.routing import COMPARE_TEXTS

    size = utf8_size(body.text_a, body.text_b)
    return await _submit_single(request, "comparison", COMPARE_TEXTS, body.model_dump(), size, wait)


BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}},
            "application/x-ndjson": {
                "schema": {"type": "string"},
                "description": 'one {"id", "text"} object (or JSON string) per line, '
                "streamed to the job store; options as query parameters",
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        **{f: {"type": "string"} for f in intake.OPTION_FIELDS},
                    },
                }
            },
        },
    }
}


@v1.post(
    "/batches",
    status_code=202,
    response_model=JobAccepted,
    openapi_extra=BATCH_BODY,
    responses={413: {"model": ErrorBody, "description": "body or document count too large"}},
)
async def submit_batch(
    request: Request,
    principal: Caller,
    threshold: float | None = None,
    algorithm: str | None = None,
    mode: str | None = None,
    webhook_url: str | None = None,
) -> Response:
    """Many texts: per-text analysis, near-duplicate pairs and clusters
    (``redundancy.process_batch``'s canvas, staged from the request)."""
    from redundancy.tasks import stage_batch

    settings = get_settings()
    kind = intake.media_type(request)
    query = {"threshold": threshold, "algorithm": algorithm, "mode": mode,
             "webhook_url": webhook_url}  # fmt: skip
    options: dict[str, Any] = {k: v for k, v in query.items() if v is not None}
    tally = intake.Tally(settings.api_max_batch_documents)
    job_id = uuid.uuid4().hex

    if kind == "application/json":
        req, items = await intake.json_batch(request)
        options = req.model_dump(exclude={"items"})
    elif kind == "multipart/form-data":
        form_options, items = await intake.multipart_batch(request)
        options.update(form_options)
    elif kind in intake.JSONL_TYPES:
        items = []
    else:
        raise intake.unsupported(kind)

    def stage_and_send(source: Any) -> Any:
        staged = stage_batch(source, batch_id=job_id, keep_texts=True, **options)
        send(staged.canvas.apply_async)
        return staged

    try:
        if items:
            counted = list(tally.count(items))
            await charge_quota(principal, tally.documents, tally.bytes)
            tally.charged_documents, tally.charged_bytes = tally.documents, tally.bytes
            staged = await anyio.to_thread.run_sync(stage_and_send, counted)
        else:
            max_line = settings.max_text_chars * 4 + 4096
            lines = intake.jsonl_items(intake.stream_reader(request), max_line)
            stream = intake.charged_stream(tally.count(lines), tally, principal)
            staged = await anyio.to_thread.run_sync(stage_and_send, stream)
    except BaseException:
        await intake.refund(tally, principal)
        raise
    await _record(
        request, principal, job_id, "batch", tasks=staged.task_count, documents=staged.count
    )
    return accepted(job_id, "batch", staged.count)


async def owned_job(job_id: str, principal: Principal) -> jobs.JobRecord:
    job = await run(jobs.owned(job_id, principal.user_id)) if len(job_id) <= 64 else None
    if job is None:
        raise NotFoundError(f"no job {job_id!r} of yours")
    return job


def status_body(job: jobs.JobRecord, snap: jobs.Snapshot, offset: int, limit: int) -> Any:
    result = snap.result
    if job.kind == "batch" and isinstance(result, dict):
        result = page_of(job.job_id, result, offset, limit)
    progress = None
    if job.kind == "batch":
        progress = {"done": snap.done or 0, "total": job.tasks}
    return JobStatus(
        job_id=job.job_id,
        kind=job.kind,
        state=snap.state,
        created_at=job.created_at,
        documents=job.documents,
        progress=progress,
        result=result,
        error=snap.error,
        links=links(job.job_id, job.kind),
    ).model_dump(mode="json")


PAGED_LISTS = ("items", "pairs", "duplicate_groups", "clusters")
"""A finished batch's lists, each as long as its documents at worst: paged alike."""


def page_of(job_id: str, result: dict[str, Any], offset: int, limit: int) -> dict[str, Any]:
    """One page of a batch's items, pairs, duplicate groups and clusters (the counts stay
    whole)."""
    lists = {name: result.get(name) or [] for name in PAGED_LISTS}
    more = any(len(values) > offset + limit for values in lists.values())
    page = {
        "offset": offset,
        "limit": limit,
        **{f"{name}_total": len(values) for name, values in lists.items()},
        "next": f"/v1/jobs/{job_id}?offset={offset + limit}&limit={limit}" if more else None,
    }
    sliced = {name: values[offset : offset + limit] for name, values in lists.items()}
    return {**result, **sliced, "page": page}


@v1.get("/jobs", response_model=JobList)
async def list_my_jobs(
    principal: Caller, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE
) -> dict[str, Any]:
    """The caller's job ids, newest first."""
    return {"jobs": await run(jobs.list_jobs(principal.user_id, limit))}


@v1.get("/jobs/{job_id}", response_model=JobStatus, responses={404: {"model": ErrorBody}})
async def job_status(
    job_id: str,
    principal: Caller,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> Response:
    """State, progress and, when finished, the result (a batch's lists one page at a time)."""
    job = await owned_job(job_id, principal)
    snap = await anyio.to_thread.run_sync(jobs.snapshot, job)
    return JSONResponse(status_body(job, snap, offset, limit))


@v1.get(
    "/jobs/{job_id}/events",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "progress, then completion"},
        404: {"model": ErrorBody},
    },
)
async def job_events(job_id: str, principal: Caller) -> EventSourceResponse:
    """Server-Sent Events: ``progress`` whenever it changes, then one ``completed``,
    ``failed`` or ``revoked`` event, and the stream ends."""
    job = await owned_job(job_id, principal)

    async def stream() -> Any:
        last: tuple[str, int | None] | None = None
        while True:
            snap = await anyio.to_thread.run_sync(jobs.snapshot, job)
            if (snap.state, snap.done) != last:
                last = (snap.state, snap.done)
                progress = {"state": snap.state, "done": snap.done, "total": job.tasks}
                yield ServerSentEvent(orjson.dumps(progress).decode(), event="progress")
            if snap.state in FINISHED:
                final: dict[str, Any] = {"job_id": job.job_id, "state": snap.state}
                final["links"] = links(job.job_id, job.kind)
                if snap.error:
                    final["error"] = snap.error
                if isinstance(snap.result, dict):
                    final["summary"] = summary(job.kind, snap.result)
                event = "completed" if snap.state == "succeeded" else snap.state
                yield ServerSentEvent(orjson.dumps(final).decode(), event=event)
                return
            await anyio.sleep(EVENTS_POLL_SECONDS)

    return EventSourceResponse(stream(), ping=EVENTS_PING_SECONDS)


def summary(kind: str, result: dict[str, Any]) -> dict[str, Any]:
    """A finished job's result for the completion event: whole for single jobs, the
    counts for a batch (its lists are paged from the status endpoint)."""
    if kind != "batch":
        return result
    counts = ("document_count", "succeeded", "failed", "unique_count", "mode")
    return {
        **{k: result.get(k) for k in counts},
        "pairs": len(result.get("pairs") or []),
        "clusters": len(result.get("clusters") or []),
    }


@v1.delete(
    "/jobs/{job_id}",
    status_code=202,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
async def revoke_job(job_id: str, principal: Caller) -> dict[str, str]:
    """Revoke a job that has not finished (a batch: no merge, so no result)."""
    job = await owned_job(job_id, principal)
    snap = await anyio.to_thread.run_sync(jobs.snapshot, job)
    if snap.state in ("succeeded", "failed"):
        raise ConflictError(f"job {job_id} already finished ({snap.state})")
    await anyio.to_thread.run_sync(jobs.revoke, job)
    await run(jobs.mark_revoked(job_id))
    return {"job_id": job_id, "state": "revoked"}


# --- process and readiness, metrics -----------------------------------------------------


@ops.get("/healthz", response_model=Health)
async def healthz() -> dict[str, Any]:
    """The process answers (liveness)."""
    return {"status": "ok", "checks": {}}


@ops.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz() -> Response:
    """Broker, result backend and the API's Redis answer (readiness)."""
    checks = await anyio.to_thread.run_sync(readiness)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                        status_code=200 if ok else 503)  # fmt: skip


READY_TIMEOUT = 2.0


def readiness() -> dict[str, str]:
    from redundancy.api.store import api_connector, run_blocking
    from redundancy.kv import cmd
    from redundancy.workers import app

    checks: dict[str, str] = {}

    def check(name: str, probe: Any) -> None:
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"{type(exc).__name__}: {exc}"[:200]

    def broker() -> None:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=READY_TIMEOUT)

    def backend() -> None:
        app.backend.get_task_meta("readyz-probe")  # one read, any backend

    def api_store() -> None:
        run_blocking(_ping(), api_connector())

    def _ping() -> Any:
        return (yield cmd("PING"))

    check("broker", broker)
    check("result_backend", backend)
    check("api_store", api_store)
    return checks


@ops.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus text: every uvicorn worker's numbers (multiprocess mode) or this one's."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    from redundancy.observability.metrics import multiprocess_enabled
    from redundancy.observability.multiproc import multiprocess_folder

    folder = multiprocess_folder()
    if folder is not None and multiprocess_enabled():
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, str(folder))
        data = await anyio.to_thread.run_sync(generate_latest, registry)
    else:
        data = generate_latest(REGISTRY)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
