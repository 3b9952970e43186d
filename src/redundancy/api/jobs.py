"""Jobs as the gateway sees them: who owns which, and their state read from Celery.

Ownership is a small hash per job (``keys.api_job``) plus a list per API key, both
expiring after ``BATCH_TTL``; a job id that is not the caller's is answered like an unknown one
(404), so ids leak nothing. State and results are read from Celery's result backend and,
for a batch's progress, from the job store's counter of finished sub-tasks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from redundancy import keys
from redundancy.kv import Flow, Pipeline, cmd
from redundancy.kv.ops import as_text

JobKind = Literal["analysis", "comparison", "batch", "indexing", "removal"]
"""indexing, removal: a corpus's ``index_documents`` / ``remove_documents`` task."""
JobState = Literal["queued", "running", "succeeded", "failed", "revoked"]
MAX_KEY_JOBS = 10_000
"""Job ids kept per API key (newest); older ones stay readable until they expire."""

CELERY_STATES: dict[str, JobState] = {
    "PENDING": "queued",
    "RECEIVED": "queued",
    "STARTED": "running",
    "RETRY": "running",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "REVOKED": "revoked",
}


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    user_id: str
    kind: JobKind
    created_at: datetime
    tasks: int
    """Sub-tasks before a batch's merge (its progress total); 1 for single jobs."""
    documents: int
    revoked: bool = False


def _record_fields(user_id: str, kind: JobKind, *, tasks: int, documents: int) -> list[object]:
    """The job hash's fields, as HSET pairs (``limits.admit`` writes the same)."""
    now = datetime.now(UTC).isoformat()
    return _pairs(user_id=user_id, kind=kind, created_at=now, tasks=tasks, documents=documents)


def record(
    job_id: str, user_id: str, key_id: str, kind: JobKind, *, tasks: int, documents: int, ttl: int
) -> Flow[None]:
    """Remember who submitted ``job_id`` (and add it to the key's list). Single jobs are
    recorded by their admission instead (``limits.admit``), in the same round trip."""
    job, mine = keys.api_job(job_id), keys.api_key_jobs(key_id)
    yield Pipeline(
        (
            cmd("HSET", job, *_record_fields(user_id, kind, tasks=tasks, documents=documents)),
            cmd("PEXPIRE", job, ttl * 1000),
            cmd("RPUSH", mine, job_id),
            cmd("LTRIM", mine, -MAX_KEY_JOBS, -1),
            cmd("PEXPIRE", mine, ttl * 1000),
        ),
        transaction=True,
    )


def forget(job_id: str) -> Flow[None]:
    """Drop the record of a job that was never sent (its key's list then skips it)."""
    yield cmd("UNLINK", keys.api_job(job_id))


def _pairs(**fields: object) -> list[object]:
    return [x for pair in fields.items() for x in pair]


def owned(job_id: str, user_id: str) -> Flow[JobRecord | None]:
    """The job's record when ``user_id`` owns it; None otherwise (unknown or not theirs)."""
    stored = yield cmd("HGETALL", keys.api_job(job_id))
    fields = _fields(stored)
    if fields.get("user_id") != user_id:
        return None
    return JobRecord(
        job_id=job_id,
        user_id=user_id,
        kind=fields["kind"],  # type: ignore[arg-type]
        created_at=datetime.fromisoformat(fields["created_at"]),
        tasks=int(fields.get("tasks", 1)),
        documents=int(fields.get("documents", 1)),
        revoked="revoked_at" in fields,
    )


def mark_revoked(job_id: str) -> Flow[None]:
    yield cmd("HSET", keys.api_job(job_id), "revoked_at", datetime.now(UTC).isoformat())


def list_jobs(user_id: str, limit: int) -> Flow[list[str]]:
    """The user's newest job ids (over all their keys), newest first."""
    key_ids = list(_fields((yield cmd("HGETALL", keys.api_user_keys(user_id)))))
    if not key_ids:
        return []
    lists = yield Pipeline(tuple(cmd("LRANGE", keys.api_key_jobs(k), -limit, -1) for k in key_ids))
    ids = [as_text(i) for found in lists for i in found]
    if not ids:
        return []
    created = yield Pipeline(tuple(cmd("HGET", keys.api_job(i), "created_at") for i in ids))
    live = [(as_text(c), i) for i, c in zip(ids, created, strict=True) if c is not None]
    return [i for _, i in sorted(live, reverse=True)[:limit]]


def _fields(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return {as_text(k): as_text(v) for k, v in reply.items()}
    flat = list(reply or [])
    return {as_text(k): as_text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}


# --- Celery's side (blocking: routes call these in a worker thread) ---------------------


@dataclass(frozen=True)
class Snapshot:
    """A job's state at one moment: Celery's, plus a batch's progress."""

    state: JobState
    result: Any = None
    error: dict[str, str] | None = None
    done: int | None = None


def snapshot(job: JobRecord) -> Snapshot:
    """Read the job's state (and result or error when finished) from Celery."""
    from celery.result import AsyncResult

    from redundancy.workers import app

    async_result = AsyncResult(job.job_id, app=app)
    meta = async_result.backend.get_task_meta(job.job_id)
    status = str(meta.get("status", "PENDING"))
    state = CELERY_STATES.get(status, "running")
    done = None
    if job.kind == "batch":
        done = job.tasks if state == "succeeded" else _subtasks_done(job)
        if state == "queued" and done:
            state = "running"
    if job.revoked and state in ("queued", "running"):
        state = "revoked"
    if state == "succeeded":
        return Snapshot(state, result=meta.get("result"), done=done)
    if state == "failed":
        return Snapshot(state, error=_error(meta.get("result")), done=done)
    return Snapshot(state, done=done)


def _subtasks_done(job: JobRecord) -> int:
    """Sub-tasks of a batch finished so far: the job store counts finished search
    sub-tasks and analysed documents; the analysis chunks count in proportion."""
    from redundancy.batch.staging import chunk_count
    from redundancy.batch.store import get_job_store
    from redundancy.config import get_settings

    search, analysed = get_job_store().progress(job.job_id)
    chunks = chunk_count(job.documents, get_settings().batch_chunk_size)
    return search + chunks * analysed // max(job.documents, 1)


def _error(exc: Any) -> dict[str, str]:
    """Celery's stored exception (JSON: exc_type / exc_message) as {type, message}."""
    if isinstance(exc, dict):
        message = exc.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(m) for m in message)
        return {"type": str(exc.get("exc_type", "Error")), "message": str(message or "")}
    return {"type": type(exc).__name__, "message": str(exc)}


def wait_finished(job: JobRecord, timeout: float) -> Snapshot:
    """Poll the result backend until the job finished or ``timeout`` passed (the
    ``?wait=`` of small jobs). Polling keeps each request to its own short commands."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        snap = snapshot(job)
        if snap.state in ("succeeded", "failed", "revoked") or time.monotonic() >= deadline:
            return snap
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.1)


def revoke(job: JobRecord) -> None:
    """Ask every worker to drop the job (a batch: its merge, so no result is produced)."""
    from redundancy.workers import app

    app.control.revoke(job.job_id)


__all__ = [
    "JobKind",
    "JobRecord",
    "JobState",
    "Snapshot",
    "forget",
    "list_jobs",
    "mark_revoked",
    "owned",
    "record",
    "revoke",
    "snapshot",
    "wait_finished",
]
