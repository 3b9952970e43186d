"""The API's JSON shapes. Requests reuse the tasks' own models (``redundancy.schemas``)
and results the core's (``redundancy.core.models``), so the OpenAPI schema is generated
from the very models the workers validate with."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from redundancy.api.jobs import JobKind, JobState
from redundancy.core.models import AnalysisResult, BatchResult, SimilarityResult
from redundancy.schemas import AnalyzeRequest, BatchOptions, CompareRequest


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StrictStr | int = Field(description="unique in the batch; default: the position")
    text: StrictStr


class BatchRequest(BatchOptions):
    """A batch sent as one JSON document (for large ones, send JSONL: it streams)."""

    items: list[StrictStr | BatchItem] = Field(
        min_length=1, description="texts, or {id, text} objects"
    )


class JobLinks(BaseModel):
    status: str = Field(description="GET: state, progress and result")
    events: str = Field(description="GET: Server-Sent Events (progress, then completion)")
    page: str | None = Field(default=None, description="a batch's results page (browser)")


class JobAccepted(BaseModel):
    """``202 Accepted``: the job is queued; follow ``Location`` or ``links``."""

    job_id: str
    kind: JobKind
    state: JobState
    documents: int
    links: JobLinks


class Progress(BaseModel):
    done: int = Field(description="finished sub-tasks")
    total: int


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class PageInfo(BaseModel):
    """Which slice of a batch's items, pairs, duplicate groups and clusters this answer
    holds."""

    offset: int
    limit: int
    items_total: int
    pairs_total: int
    duplicate_groups_total: int
    clusters_total: int
    next: str | None = Field(description="the next page, while any list continues")


class BatchResultPage(BatchResult):
    """A finished batch: counts in full, ``items``/``pairs``/``duplicate_groups``/``clusters``
    one page each."""

    page: PageInfo


class JobStatus(BaseModel):
    job_id: str
    kind: JobKind
    state: JobState
    created_at: datetime
    documents: int
    progress: Progress | None = None
    result: AnalysisResult | SimilarityResult | BatchResultPage | None = None
    error: ErrorDetail | None = None
    links: JobLinks


class JobList(BaseModel):
    jobs: list[str] = Field(description="the caller's job ids, newest first")


class SessionInfo(BaseModel):
    user_id: str
    key_id: str
    expires_at: datetime
    max_until: datetime
    bound_ip: bool


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str | None = Field(
        default=None, description="the key, when not sent as 'Authorization: Bearer'"
    )


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


__all__ = [
    "AnalyzeRequest",
    "BatchItem",
    "BatchRequest",
    "BatchResultPage",
    "CompareRequest",
    "ErrorBody",
    "Health",
    "JobAccepted",
    "JobList",
    "JobStatus",
    "LoginRequest",
    "PageInfo",
    "Progress",
    "SessionInfo",
]
