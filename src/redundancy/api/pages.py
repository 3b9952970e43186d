"""The results page of a batch, ``GET /batches/{id}``, for a logged-in browser.

The page itself is ``redundancy.report.render_batch_report`` (one self-contained HTML
document); this route finds the caller's batch, its result and the texts its diff view
shows (kept by the merge for ``BATCH_TTL``: ``keys.batch_texts``), and serves it with a
strict Content-Security-Policy: nothing but the page's own inline style and script runs,
and it loads nothing, whatever the documents contain.
"""

from __future__ import annotations

import html
import json

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from redundancy import keys
from redundancy.api import jobs
from redundancy.api.auth import authorized
from redundancy.api.errors import UnauthorizedError
from redundancy.api.store import run

router = APIRouter(include_in_schema=False)

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
}


def kept_texts(batch_id: str) -> dict[str, str]:
    """Texts of the documents in a finished batch's best pairs (id -> text)."""
    from redundancy.batch.store import get_job_store

    texts = {}
    for raw in get_job_store().get_blobs(keys.batch_texts(batch_id)):
        doc = json.loads(raw)
        texts[str(doc["id"])] = str(doc["text"])
    return texts


def _note(title: str, text: str, status: int, refresh: bool = False) -> HTMLResponse:
    meta = '<meta http-equiv="refresh" content="3">' if refresh else ""
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(text)}</p></body></html>"
    )
    return HTMLResponse(page, status_code=status, headers=PAGE_HEADERS)


@router.get("/batches/{job_id}", response_class=HTMLResponse)
async def batch_page(job_id: str, request: Request) -> Response:
    try:
        principal = await authorized(request)
    except UnauthorizedError:
        return RedirectResponse(f"/login?next=/batches/{job_id}", status_code=303)
    job = await run(jobs.owned(job_id, principal.user_id)) if len(job_id) <= 64 else None
    if job is None or job.kind != "batch":
        return _note("Not found", f"You have no batch {job_id}.", 404)
    snap = await anyio.to_thread.run_sync(jobs.snapshot, job)
    if snap.state in ("queued", "running"):
        done = f"{snap.done or 0} of {job.tasks} sub-tasks done"
        return _note(f"Batch {job_id}", f"Still {snap.state}: {done}.", 200, refresh=True)
    if snap.state != "succeeded" or not isinstance(snap.result, dict):
        reason = (snap.error or {}).get("message", snap.state)
        return _note(f"Batch {job_id}", f"The batch has no result: {reason}", 200)
    from redundancy.report import (  # type: ignore[import-not-found,unused-ignore]
        render_batch_report,  # the page itself (lazy import: see the module docstring)
    )

    texts = await anyio.to_thread.run_sync(kept_texts, job_id)
    page = render_batch_report(snap.result, texts, title=f"Batch {job_id}")
    return HTMLResponse(page, headers=PAGE_HEADERS)
