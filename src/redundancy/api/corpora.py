"""The corpus endpoints (``/v1/corpora``): a persistent near-duplicate index per user.

**Ownership.** A corpus belongs to the API user who created it: the owner is part of
its settings (``CorpusConfig.owner``), written by the same ``HSETNX`` that creates it, so
no second record can disagree. Another user's corpus -- or one made by ``crd corpus``
without ``--owner`` -- answers 404 like an unknown name and is never listed. Names are
one namespace (the registry ``crd corpus`` uses too): creating a name another user
holds is a 409 that says only that the name is taken.

**Where the work runs.** Indexing and bulk removal are the corpus Celery tasks (queue
``corpus``): ``202`` with a job, or the result inline within ``?wait=`` seconds, as for
analyses. A query, a check-and-index and one document's removal take milliseconds and
run in the API process (a worker thread), bounded by ``MAX_TEXT_CHARS`` and the query's
``limit``. Every corpus call's Redis failure is a 503 that says so.

**Charged.** Every request counts against the key's rate limit; documents sent to be
indexed, queried or checked count against the daily documents/bytes quota (given back
when the request fails after the charge).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from redundancy.api import jobs
from redundancy.api.apikeys import Principal
from redundancy.api.auth import admitted, authorized, charge_quota, refund_quota
from redundancy.api.errors import (
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from redundancy.api.models import (
    CheckRequest,
    CheckResult,
    CorpusInfo,
    CorpusList,
    CorpusStats,
    CreateCorpusRequest,
    ErrorBody,
    IndexRequest,
    IndexSummary,
    JobAccepted,
    JobStatus,
    QueryRequest,
    RemoveRequest,
    SimilarResult,
)
from redundancy.api.routes import (
    DEFAULT_PAGE,
    FINISHED,
    Wait,
    _now,
    _record,
    accepted,
    send,
    status_body,
    utf8_size,
)
from redundancy.api.store import run
from redundancy.config import get_settings
from redundancy.core.corpus import CorpusConfig
from redundancy.corpus.service import (
    Corpus,
    CorpusBusyError,
    CorpusExistsError,
    UnknownCorpusError,
    validate_items,
)

T = TypeVar("T")

router = APIRouter(
    prefix="/v1/corpora",
    tags=["corpora"],
    responses={
        401: {"model": ErrorBody, "description": "no, unknown or revoked API key / session"},
        404: {"model": ErrorBody, "description": "no corpus of that name of yours"},
        422: {"model": ErrorBody, "description": "invalid input, with a readable message"},
        429: {"model": ErrorBody, "description": "rate limit or daily quota (see Retry-After)"},
        503: {"model": ErrorBody, "description": "the corpus store did not answer"},
    },
)

Caller = Annotated[Principal, Depends(authorized)]
Name = Annotated[str, Path(description="the corpus's name", max_length=64)]
RETRY_SECONDS = "1"
"""Retry-After of a 503: the corpus store down, or a shard too busy to settle."""


class CorpusStoreUnavailableError(ServiceUnavailableError):
    """The corpus Redis (``CORPUS_REDIS_URL``, else ``REDIS_URL``) did not answer."""


async def blocking(call: Callable[[], T]) -> T:
    """Run a corpus call in a worker thread (it inherits the correlation id); the corpus
    store's failures become 503s that say what failed."""
    try:
        return await anyio.to_thread.run_sync(call)
    except (RedisError, OSError) as exc:
        raise CorpusStoreUnavailableError(
            f"the corpus store (CORPUS_REDIS_URL, else REDIS_URL) did not answer: "
            f"{type(exc).__name__}: {exc}; try again",
            headers={"Retry-After": RETRY_SECONDS},
        ) from exc
    except CorpusBusyError as exc:
        raise ServiceUnavailableError(f"{exc}", headers={"Retry-After": RETRY_SECONDS}) from exc


def owned(name: str, principal: Principal) -> Corpus:
    """The caller's corpus ``name`` (blocking); 404 when unknown or another's -- whose
    message never lists other corpora, as the service's own error would."""
    from redundancy.corpus import get_corpus

    try:
        return get_corpus(name, owner=principal.user_id)
    except UnknownCorpusError:
        raise NotFoundError(f"no corpus {name!r} of yours") from None


def info(config: CorpusConfig) -> dict[str, Any]:
    base = f"/v1/corpora/{config.name}"
    return CorpusInfo(
        name=config.name,
        threshold=config.threshold,
        algorithm=config.algorithm,
        shards=config.shards,
        index=config.params,
        created_at=config.created_at,
        links={
            "documents": f"{base}/documents",
            "query": f"{base}/query",
            "check": f"{base}/check",
        },
    ).model_dump(mode="json")


# --- the corpus itself ----------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    response_model=CorpusInfo,
    responses={409: {"model": ErrorBody, "description": "the name is taken"}},
)
async def create(principal: Caller, body: CreateCorpusRequest) -> Response:
    """Create a corpus of the caller's (``Location``: its stats)."""
    from redundancy.corpus import create_corpus

    def make() -> Corpus:
        try:
            return create_corpus(
                body.name,
                body.threshold,
                body.algorithm,
                body.shards,
                bands=body.bands,
                owner=principal.user_id,
            )
        except CorpusExistsError as exc:
            try:
                owned(body.name, principal)
            except NotFoundError:  # another's (or dropped meanwhile): say nothing of it
                raise ConflictError(
                    f"the corpus name {body.name!r} is taken; choose another"
                ) from None
            raise ConflictError(str(exc)) from None

    corpus = await blocking(make)
    return JSONResponse(
        info(corpus.config), status_code=201, headers={"Location": f"/v1/corpora/{corpus.name}"}
    )


@router.get("", response_model=CorpusList)
async def list_mine(principal: Caller) -> dict[str, Any]:
    """The caller's corpora with their settings, by name."""
    from redundancy.corpus import list_corpora

    def mine() -> list[dict[str, Any]]:
        return [info(c) for c in list_corpora() if c.owner == principal.user_id]

    return {"corpora": await blocking(mine)}


@router.get("/{name}", response_model=CorpusStats)
async def stats(name: Name, principal: Caller) -> dict[str, Any]:
    """Documents, events, index parameters and projection lag (``crd corpus stats``)."""
    return await blocking(lambda: owned(name, principal).stats())


@router.delete("/{name}", status_code=204)
async def drop(name: Name, principal: Caller) -> Response:
    """Delete the corpus for good: its index, its event store and its settings."""
    await blocking(lambda: owned(name, principal).drop())
    return Response(status_code=204)


# --- documents: indexing and removal run as the corpus tasks ---------------------------


def too_many(count: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"{count:,} documents: one request may hold at most {limit:,} "
        "(API_MAX_CORPUS_DOCUMENTS); send them in several"
    )


JOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": JobStatus, "description": "finished within ?wait="},
    413: {"model": ErrorBody, "description": "body or document count too large"},
}


@router.post("/{name}/documents", status_code=202, response_model=JobAccepted,
             responses=JOB_RESPONSES)  # fmt: skip
async def index(
    request: Request, name: Name, principal: Caller, body: IndexRequest, wait: Wait = None
) -> Response:
    """Add or replace documents by id (``redundancy.corpus.index_documents``): a job
    whose result counts what was indexed, replaced and unchanged. Every item is checked
    here first: one invalid item refuses the request (422) and nothing is sent."""
    from redundancy.names import CORPUS_INDEX

    settings = get_settings()
    limit = settings.api_max_corpus_documents
    if len(body.items) > limit:
        raise too_many(len(body.items), limit)
    raw = [i if isinstance(i, str) else i.model_dump() for i in body.items]
    # in a thread: normalising and hashing thousands of texts must not stall the loop
    validated = await anyio.to_thread.run_sync(validate_items, raw, settings.max_text_chars)
    items = [{"id": doc_id, "text": text} for doc_id, text in validated]
    size = utf8_size(*(text for _, text in validated))
    await blocking(lambda: owned(name, principal))
    await charge_quota(principal, len(items), size)
    try:
        return await submit(request, principal, "indexing", CORPUS_INDEX, name, items, wait)
    except BaseException:
        await refund_quota(principal, len(items), size)
        raise


@router.delete("/{name}/documents", status_code=202, response_model=JobAccepted,
               responses=JOB_RESPONSES)  # fmt: skip
async def remove_many(
    request: Request, name: Name, principal: Caller, body: RemoveRequest, wait: Wait = None
) -> Response:
    """Remove documents by id (``redundancy.corpus.remove_documents``): a job whose
    result counts what was removed and what was not there."""
    from redundancy.core.corpus import validate_doc_id
    from redundancy.names import CORPUS_REMOVE

    limit = get_settings().api_max_corpus_documents
    if len(body.ids) > limit:
        raise too_many(len(body.ids), limit)
    ids = list(dict.fromkeys(validate_doc_id(i) for i in body.ids))
    await blocking(lambda: owned(name, principal))
    return await submit(request, principal, "removal", CORPUS_REMOVE, name, ids, wait)


@router.delete("/{name}/documents/{doc_id:path}", response_model=IndexSummary)
async def remove_one(name: Name, doc_id: str, principal: Caller) -> dict[str, Any]:
    """Remove one document, answered when done (``removed`` 1, or ``absent`` 1)."""
    from redundancy.observability.context import current_correlation_id

    cid = current_correlation_id()
    summary = await blocking(
        lambda: owned(name, principal).remove_documents([doc_id], correlation_id=cid)
    )
    return summary.model_dump(mode="json")


async def submit(
    request: Request,
    principal: Principal,
    kind: jobs.JobKind,
    task_name: str,
    name: str,
    batch: list[Any],
    wait: float | None,
) -> Response:
    """Record the job as the caller's, send the task (which checks that the corpus is
    still theirs when it runs), then answer 202 -- or the finished job, when it finishes
    within ``wait`` seconds."""
    from redundancy.workers import app

    job_id = uuid.uuid4().hex
    documents = len(batch)
    args, kwargs = (name, batch), {"owner": principal.user_id}
    await _record(request, principal, job_id, kind, tasks=1, documents=documents)
    task = app.tasks[task_name]
    try:
        await anyio.to_thread.run_sync(
            lambda: send(lambda: task.apply_async(args=args, kwargs=kwargs, task_id=job_id))
        )
    except BaseException:
        await run(jobs.forget(job_id))
        raise
    if wait:
        job = jobs.JobRecord(job_id, principal.user_id, kind, _now(), 1, documents)
        timeout = min(wait, get_settings().api_max_wait)
        snap = await anyio.to_thread.run_sync(jobs.wait_finished, job, timeout)
        if snap.state in FINISHED:
            return JSONResponse(status_body(job, snap, 0, DEFAULT_PAGE))
    return accepted(job_id, kind, documents)


# --- queries and checks: answered inline ----------------------------------------------


@router.post("/{name}/query", response_model=SimilarResult)
async def query(request: Request, name: Name, body: QueryRequest) -> dict[str, Any]:
    """Indexed documents scoring at least ``threshold`` against ``text``, each verified
    with the corpus's scorer, best first (``find_similar``)."""
    size = utf8_size(body.text)
    principal = await admitted(request, documents=1, size=size)
    try:
        found = await blocking(
            lambda: owned(name, principal).find_similar(
                body.text, body.threshold, body.limit, body.mode
            )
        )
    except BaseException:
        await refund_quota(principal, 1, size)
        raise
    return found.model_dump(mode="json")


@router.post("/{name}/check", response_model=CheckResult)
async def check(request: Request, name: Name, body: CheckRequest) -> dict[str, Any]:
    """Near-duplicates among the documents indexed before, then index the text unless
    ``policy`` rejects it (``check_and_index``; a ``duplicate.detected`` event records
    any matches)."""
    from redundancy.observability.context import current_correlation_id

    size = utf8_size(body.text)
    principal = await admitted(request, documents=1, size=size)
    item: Any = body.text if body.id is None else {"id": body.id, "text": body.text}
    cid = current_correlation_id()
    try:
        result = await blocking(
            lambda: owned(name, principal).check_and_index(
                item,
                body.policy,
                threshold=body.threshold,
                limit=body.limit,
                mode=body.mode,
                correlation_id=cid,
            )
        )
    except BaseException:
        await refund_quota(principal, 1, size)
        raise
    return result.model_dump(mode="json")


__all__ = ["CorpusStoreUnavailableError", "router"]
