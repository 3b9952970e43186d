"""A batch added to a corpus as a saga, the pure part: what a step records before it
changes the corpus, and what undoing it takes (README: Corpora, "A batch added to a
corpus").

A step indexes one chunk of the batch. Before it changes anything it records, per
document of its chunk, what the corpus held: nothing (the step **adds** it) or another
text (the step **replaces** it; the old text is kept). Ids the corpus already holds with
the same text are left out: the step changes nothing for them. The record is written once
(first writer wins), so a redelivered step that finds half its chunk applied still undoes
to the state before its first attempt.

Undoing a step (``undo_plan``) touches only what is still the step's own: an added
document is removed, and a replaced one restored, only while the corpus holds the text the
step wrote (its digest). A document another writer changed since is left alone and
counted as superseded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

SagaState = Literal["running", "completed", "compensating", "compensated", "failed"]
SAGA_STATES: Final = ("running", "completed", "compensating", "compensated", "failed")
"""running: steps are being applied; completed: every step applied; compensating: a step
failed for good and the applied ones are being undone; compensated: undone, the corpus is
as before the batch; failed: refused before any change (e.g. the corpus had a saga
running), or compensation itself could not finish (the cause says which)."""
TERMINAL_STATES: Final = ("completed", "compensated", "failed")

StepStatus = Literal["applying", "done", "compensated"]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Replaced(BaseModel):
    """A document a step replaced: the text it had (and its digest), and the digest of
    the text the step wrote."""

    model_config = ConfigDict(frozen=True)

    old_text: str
    old_digest: str
    new_digest: str


class StepRecord(BaseModel):
    """What one step changes (written before the change) and how far it got."""

    model_config = ConfigDict(frozen=True)

    step: int
    status: StepStatus = "applying"
    added: dict[str, str] = Field(default_factory=dict)
    """Document id -> digest of the text the step indexed (the corpus had no such id)."""
    replaced: dict[str, Replaced] = Field(default_factory=dict)
    superseded: list[str] = Field(default_factory=list)
    """Ids compensation left alone: another writer had changed them since."""


class SagaRecord(BaseModel):
    """A saga as ``crd corpus jobs`` lists it."""

    model_config = ConfigDict(frozen=True)

    saga_id: str
    corpus: str
    batch_id: str
    state: SagaState
    steps_total: int
    steps_done: int = 0
    """Steps applied (while running or when completed), or not yet undone (compensating)."""
    failed_step: int | None = None
    cause: str | None = None
    documents: int = 0
    added: int = 0
    replaced: int = 0
    created_at: datetime
    updated_at: datetime


def plan_step(
    step: int, items: Sequence[tuple[str, str]], current: Mapping[str, str | None]
) -> tuple[StepRecord, list[str]]:
    """The record of a step over ``items`` (``(id, digest of its text)``), given the digest
    the corpus holds for each id (``None``: absent), and the ids whose old texts the
    record still needs (filled in by ``with_old_texts``)."""
    added: dict[str, str] = {}
    replacing: dict[str, Replaced] = {}
    for doc_id, digest in items:
        held = current.get(doc_id)
        if held is None:
            added[doc_id] = digest
        elif held != digest:
            replacing[doc_id] = Replaced(old_text="", old_digest=held, new_digest=digest)
    record = StepRecord(step=step, added=added, replaced=replacing)
    return record, sorted(replacing)


def with_old_texts(record: StepRecord, old_texts: Mapping[str, str]) -> StepRecord:
    missing = sorted(set(record.replaced) - set(old_texts))
    if missing:
        raise ValueError(f"the old texts of {len(missing)} replaced documents are missing")
    replaced = {
        d: r.model_copy(update={"old_text": old_texts[d]}) for d, r in record.replaced.items()
    }
    return record.model_copy(update={"replaced": replaced})


def undo_plan(
    record: StepRecord, current: Mapping[str, str | None]
) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """What undoing ``record`` takes, given the digests the corpus holds now: ids to
    remove, ``(id, old text)`` to index again, and the superseded ids left alone. A
    document the step never reached (its change was not applied) needs nothing."""
    remove: list[str] = []
    restore: list[tuple[str, str]] = []
    superseded: list[str] = []
    for doc_id, digest in sorted(record.added.items()):
        held = current.get(doc_id)
        if held == digest:
            remove.append(doc_id)
        elif held is not None:
            superseded.append(doc_id)
    for doc_id, replaced in sorted(record.replaced.items()):
        held = current.get(doc_id)
        if held == replaced.new_digest:
            restore.append((doc_id, replaced.old_text))
        elif held != replaced.old_digest:
            superseded.append(doc_id)
    return remove, restore, sorted(superseded)
