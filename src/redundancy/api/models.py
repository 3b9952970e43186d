"""The API's JSON shapes. Requests reuse the tasks' own models (``redundancy.schemas``)
and results the core's (``redundancy.core.models``), so the OpenAPI schema is generated
from the very models the workers validate with."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from redundancy.api.jobs import JobKind, JobState
from redundancy.core.corpus import CORPUS_SCORERS, QUERY_MODES, IndexParams
from redundancy.core.models import AnalysisResult, BatchResult, SimilarityResult
from redundancy.corpus.service import (
    MAX_QUERY_LIMIT,
    POLICIES,
    CheckResult,
    IndexSummary,
    SimilarResult,
)
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
    result: AnalysisResult | SimilarityResult | BatchResultPage | IndexSummary | None = None
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


# --- corpora (redundancy.api.corpora) --------------------------------------------------


class CreateCorpusRequest(BaseModel):
    """A new corpus; what is left out takes ``crd corpus create``'s defaults. Its settings
    are checked by the corpus's own model (``CorpusConfig``)."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(
        description="1-64 lower-case letters, digits, '.', '_' or '-' (one namespace for "
        "every user: a name someone holds is 409)"
    )
    threshold: float | None = Field(
        default=None, description="the minimum threshold (queries may ask for any higher)"
    )
    algorithm: str | None = Field(
        default=None, description=f"the scorer: {', '.join(CORPUS_SCORERS)}"
    )
    shards: int | None = Field(default=None, description="index shards (default 8)")
    bands: int | None = Field(
        default=None, description="LSH bands (default: what the threshold needs)"
    )


class CorpusLinks(BaseModel):
    documents: str = Field(description="POST: index documents (a job); DELETE: remove ids")
    query: str = Field(description="POST: verified near-duplicates of a text")
    check: str = Field(description="POST: matches, then index unless the policy rejects")


class CorpusInfo(BaseModel):
    """A corpus's settings, fixed at creation."""

    name: str
    threshold: float
    algorithm: str
    shards: int
    index: IndexParams
    created_at: datetime
    links: CorpusLinks


class CorpusList(BaseModel):
    corpora: list[CorpusInfo] = Field(description="the caller's corpora, by name")


class ShardStats(BaseModel):
    shard: int
    generation: str
    documents: int
    slots: int
    buckets: int
    position: str = Field(description="the last store position the shard applied")
    store_end: str
    building: str | None = Field(description="a rebuild's generation under way")


class CorpusStats(BaseModel):
    """What ``crd corpus stats`` shows: documents, events, projection lag."""

    corpus: str
    threshold: float
    algorithm: str
    shards: int
    index: IndexParams
    event_store: str
    documents: int
    events: int
    lagging_shards: list[int] = Field(description="shards behind their event store")
    band_entries: int
    per_shard: list[ShardStats]


class CorpusDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StrictStr = Field(description="unique in the corpus: the same id replaces")
    text: StrictStr


class IndexRequest(BaseModel):
    """Documents to add or replace by id (a plain text's id is its content hash)."""

    model_config = ConfigDict(extra="forbid")

    items: list[StrictStr | CorpusDocument] = Field(
        min_length=1, description="texts, or {id, text} objects"
    )


class RemoveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[StrictStr] = Field(min_length=1, description="document ids (absent ones count)")


class QueryRequest(BaseModel):
    """Verified near-duplicates of ``text`` in the corpus, best first."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr
    threshold: float | None = Field(
        default=None, description="from the corpus's minimum (default) up to 1"
    )
    limit: int = Field(default=20, ge=1, le=MAX_QUERY_LIMIT, description="matches at most")
    mode: str = Field(
        default="indexed",
        description="indexed (LSH candidates, milliseconds) or exact (every document: "
        "recall 1.0, slower)",
        json_schema_extra={"enum": list(QUERY_MODES)},
    )

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in QUERY_MODES:
            raise ValueError(f"unknown mode {v!r}; choose one of {', '.join(QUERY_MODES)}")
        return v


class CheckRequest(QueryRequest):
    """Matches among the documents indexed before, then index it unless ``policy``
    rejects it."""

    id: StrictStr | None = Field(default=None, description="default: the content hash")
    policy: str = Field(
        default="index",
        description="index (always), reject (if any match), reject-exact (if an "
        "identical text is there)",
        json_schema_extra={"enum": list(POLICIES)},
    )

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(f"unknown policy {v!r}; choose one of {', '.join(POLICIES)}")
        return v


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


__all__ = [
    "AnalyzeRequest",
    "BatchItem",
    "BatchRequest",
    "BatchResultPage",
    "CheckRequest",
    "CheckResult",
    "CompareRequest",
    "CorpusDocument",
    "CorpusInfo",
    "CorpusLinks",
    "CorpusList",
    "CorpusStats",
    "CreateCorpusRequest",
    "ErrorBody",
    "Health",
    "IndexRequest",
    "IndexSummary",
    "JobAccepted",
    "JobList",
    "JobStatus",
    "LoginRequest",
    "PageInfo",
    "Progress",
    "QueryRequest",
    "RemoveRequest",
    "SessionInfo",
    "ShardStats",
    "SimilarResult",
]
