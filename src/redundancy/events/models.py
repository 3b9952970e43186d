"""Domain events: one envelope (docs/architecture.md §4) around a typed payload, JSON on the wire.

    AnalysisCompletedEvent(content_hash=..., redundancy_score=0.5, analysis_result={...})

Payload fields may be given flat, as in the original service; ``aggregate_id`` (the
message key, so events of one aggregate stay in order) defaults from the payload.
Events made for a job get a deterministic ``event_id`` (``event_id_for``): a job that runs
twice (redelivered after a crash) yields the same id, and consumers drop the repeat.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from redundancy.events.errors import InvalidEventError

ENVELOPE_VERSION = 1
EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:content-redundancy-detector:events")

ANALYSIS_COMPLETED: Final = "analysis.completed"
SIMILARITY_COMPLETED: Final = "similarity.completed"
BATCH_COMPLETED: Final = "batch.completed"
WEBHOOK_DELIVERED: Final = "webhook.delivered"
JOB_FAILED: Final = "job.failed"
DOCUMENT_INDEXED: Final = "document.indexed"
DOCUMENT_REMOVED: Final = "document.removed"
DUPLICATE_DETECTED: Final = "duplicate.detected"
BATCH_FAILED: Final = "batch.failed"


def event_id_for(event_type: str, job_id: str) -> uuid.UUID:
    """The same id every time one job's outcome is reported (uuid5 of type and job)."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{event_type}:{job_id}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


class DomainEvent(BaseModel):
    """The envelope. Subclasses fix ``event_type`` and type the ``payload``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str
    version: int = ENVELOPE_VERSION
    aggregate_id: str
    occurred_at: datetime = Field(default_factory=_utc_now)
    correlation_id: str | None = None
    trace_id: str | None = None
    """OpenTelemetry trace of the job that caused the event (32 hex digits), if traced."""
    task_id: str | None = None
    payload: Any

    aggregate_field: ClassVar[str | None] = None
    """Payload field whose value is the default ``aggregate_id``."""

    @model_validator(mode="before")
    @classmethod
    def _flat_payload(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        payload_type = cls.model_fields["payload"].annotation
        if (
            "payload" not in data
            and isinstance(payload_type, type)
            and issubclass(payload_type, BaseModel)
        ):
            names = set(payload_type.model_fields)
            data["payload"] = {k: data.pop(k) for k in list(data) if k in names}
        if "aggregate_id" not in data:
            payload = data.get("payload")
            if isinstance(payload, BaseModel):
                payload = payload.model_dump()
            value = cls._aggregate_of(payload) if isinstance(payload, dict) else None
            data["aggregate_id"] = (
                value or data.get("task_id") or str(data.setdefault("event_id", uuid.uuid4()))
            )
        return data

    @classmethod
    def _aggregate_of(cls, payload: dict[str, Any]) -> Any:
        """The default ``aggregate_id`` from the payload (None: the task's or event's id)."""
        return payload.get(cls.aggregate_field) if cls.aggregate_field else None

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("occurred_at must carry a time zone")
        return v.astimezone(UTC)

    def to_json(self) -> bytes:
        """The wire form: compact UTF-8 JSON of the envelope."""
        return self.model_dump_json().encode()


class AnalysisCompletedPayload(_Payload):
    content_hash: str
    redundancy_score: float
    analysis_result: dict[str, Any]


class AnalysisCompletedEvent(DomainEvent):
    """One text analysed (``redundancy.analyze_content``); aggregate: its content hash."""

    event_type: Literal["analysis.completed"] = ANALYSIS_COMPLETED
    payload: AnalysisCompletedPayload
    aggregate_field: ClassVar[str | None] = "content_hash"


class SimilarityCompletedPayload(_Payload):
    text1_hash: str
    text2_hash: str
    similarity_score: float
    is_similar: bool
    algorithm: str | None = None
    threshold: float | None = None


class SimilarityCompletedEvent(DomainEvent):
    """Two texts compared (``redundancy.compare_texts``); aggregate: ``<hash1>:<hash2>``."""

    event_type: Literal["similarity.completed"] = SIMILARITY_COMPLETED
    payload: SimilarityCompletedPayload

    @classmethod
    def _aggregate_of(cls, payload: dict[str, Any]) -> Any:
        first, second = payload.get("text1_hash"), payload.get("text2_hash")
        return f"{first}:{second}" if first and second else None


class BatchProcessingCompletedPayload(_Payload):
    batch_id: str
    total_jobs: int = Field(ge=0)
    completed_jobs: int = Field(ge=0)
    failed_jobs: int = Field(ge=0)
    unique_count: int | None = None
    pair_count: int | None = Field(
        default=None, description="pairs listed: between distinct texts unless expanded"
    )
    duplicate_group_count: int | None = Field(
        default=None, description="identical texts occurring more than once"
    )
    document_pair_count: int | None = Field(
        default=None, description="document pairs in all, copies of identical texts included"
    )
    cluster_count: int | None = None
    threshold: float | None = None
    algorithm: str | None = None


class BatchProcessingCompletedEvent(DomainEvent):
    """A batch merged (once per batch); aggregate: the batch id."""

    event_type: Literal["batch.completed"] = BATCH_COMPLETED
    payload: BatchProcessingCompletedPayload
    aggregate_field: ClassVar[str | None] = "batch_id"


class WebhookDeliveredPayload(_Payload):
    endpoint_id: str = Field(description="sha256 of the URL, first 16 hex digits")
    delivery_id: str
    status: Literal["delivered", "failed", "refused"]
    attempts: int = Field(ge=0)
    status_code: int | None = None
    error: str | None = None
    delivered_event_id: str | None = None
    host: str | None = None


class WebhookDeliveredEvent(DomainEvent):
    """The final outcome of one webhook delivery.

    Aggregate: the subject the webhook announced (the batch id, given by the batch merge), so
    it shares a Kafka partition with that batch's ``batch.completed``; the delivery id is
    only the fallback when no subject is given."""

    event_type: Literal["webhook.delivered"] = WEBHOOK_DELIVERED
    payload: WebhookDeliveredPayload
    aggregate_field: ClassVar[str | None] = "delivery_id"


Job = Literal["analysis", "similarity", "batch"]


class JobFailedPayload(_Payload):
    job: Job
    task_name: str
    error_type: str
    error_message: str
    retries: int = 0


class JobFailedEvent(DomainEvent):
    """A job that failed for good (after its retries); aggregate: the job (batch id or task id)."""

    event_type: Literal["job.failed"] = JOB_FAILED
    payload: JobFailedPayload


# --- corpus events (redundancy.corpus): the event store of a corpus holds these ------------


class CorpusDocumentPayload(_Payload):
    corpus: str
    doc_id: str


class _CorpusEvent(DomainEvent):
    """An event of one document of a corpus; aggregate: ``corpus/doc_id``."""

    @classmethod
    def _aggregate_of(cls, payload: dict[str, Any]) -> Any:
        corpus, doc_id = payload.get("corpus"), payload.get("doc_id")
        return f"{corpus}/{doc_id}" if corpus and doc_id is not None else None


class DocumentIndexedPayload(CorpusDocumentPayload):
    text: str
    content_hash: str = Field(description="sha256 of the normalised text")


class DocumentIndexedEvent(_CorpusEvent):
    """A document added to a corpus, or its text replaced; aggregate: ``corpus/doc_id``."""

    event_type: Literal["document.indexed"] = DOCUMENT_INDEXED
    payload: DocumentIndexedPayload


class DocumentRemovedEvent(_CorpusEvent):
    """A document removed from a corpus; aggregate: ``corpus/doc_id``."""

    event_type: Literal["document.removed"] = DOCUMENT_REMOVED
    payload: CorpusDocumentPayload


class DuplicateMatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    score: float


class DuplicateDetectedPayload(CorpusDocumentPayload):
    content_hash: str
    threshold: float
    matches: list[DuplicateMatch]
    action: str = Field(description="what check_and_index did: indexed, replaced, ..., rejected")


class DuplicateDetectedEvent(_CorpusEvent):
    """A document checked against a corpus had near-duplicates there (it may have been
    indexed anyway, or rejected, by the caller's policy); aggregate: ``corpus/doc_id``."""

    event_type: Literal["duplicate.detected"] = DUPLICATE_DETECTED
    payload: DuplicateDetectedPayload


class BatchFailedPayload(_Payload):
    batch_id: str
    corpus: str
    saga_id: str
    cause: str
    failed_step: int | None = Field(default=None, description="the step that failed for good")
    steps_total: int = Field(ge=0)
    compensated_steps: int = Field(ge=0, description="applied steps undone, in reverse")
    superseded: int = Field(
        default=0, ge=0, description="documents left alone: another writer changed them since"
    )


class BatchFailedEvent(DomainEvent):
    """A batch added to a corpus (a saga) failed for good: its applied steps were undone
    and the corpus is as before the batch, or nothing was changed (refused); aggregate:
    the batch id."""

    event_type: Literal["batch.failed"] = BATCH_FAILED
    payload: BatchFailedPayload
    aggregate_field: ClassVar[str | None] = "batch_id"


EVENT_CLASSES: dict[str, type[DomainEvent]] = {
    cls.model_fields["event_type"].default: cls
    for cls in (
        AnalysisCompletedEvent,
        SimilarityCompletedEvent,
        BatchProcessingCompletedEvent,
        WebhookDeliveredEvent,
        JobFailedEvent,
        DocumentIndexedEvent,
        DocumentRemovedEvent,
        DuplicateDetectedEvent,
        BatchFailedEvent,
    )
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_CLASSES)


def parse_event(data: bytes | str | dict[str, Any]) -> DomainEvent:
    """An event from its wire form; unknown types (newer producers) parse as DomainEvent."""
    try:
        raw = data if isinstance(data, dict) else json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEventError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidEventError("an event is a JSON object")
    cls = EVENT_CLASSES.get(str(raw.get("event_type")), DomainEvent)
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise InvalidEventError(f"not a valid {cls.__name__}: {exc.errors()[0]['msg']}") from None
