"""A batch added to a corpus, all or nothing: a saga whose state lives in the corpus's
Redis (README: Corpora, "A batch added to a corpus").

The steps are the batch's chunks, applied one after another (``redundancy.batch.corpus``
sends each step when the one before is done). A step first records what it adds and
what it replaces, old texts included (``redundancy.core.saga``; the first record written
wins, so a redelivered step keeps the state from before its first attempt), then indexes
its chunk through the corpus's normal command, then marks itself done. Every write is
idempotent, so a step redelivered after its worker died simply runs again.

When a step fails for good, ``compensate`` undoes the applied steps in reverse, again
through the corpus's commands (so the store records the compensation as events): it
removes what a step added and indexes the old text of what it replaced, for documents
that still hold the step's text. The corpus then answers queries as before the batch, and
a ``batch.failed`` event names the cause.

One saga adds to a corpus at a time: ``begin`` takes the corpus's saga lease (renewed by
every step, released when the saga ends; it lapses after ``BATCH_TTL``, when the staged
documents expire anyway). A second saga that finds the lease held fails at once, changing
nothing, with the holder's id in its cause. Writers outside sagas are not blocked;
compensation leaves their changes alone (superseded documents).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redundancy import keys
from redundancy.core.corpus import NewText
from redundancy.core.saga import (
    SagaRecord,
    StepRecord,
    plan_step,
    undo_plan,
    utc_now,
    with_old_texts,
)
from redundancy.corpus.service import Corpus
from redundancy.events.emitter import emit
from redundancy.events.models import (
    BATCH_FAILED,
    BatchFailedEvent,
    BatchFailedPayload,
    event_id_for,
)

log = logging.getLogger(__name__)

STEP_FIELD = "step:"
RECORD_FIELDS = (
    "saga_id", "corpus", "batch_id", "state", "steps_total", "steps_done", "failed_step",
    "cause", "documents", "added", "replaced", "created_at", "updated_at",
)  # fmt: skip
MAX_CAUSE_CHARS = 2_000
COMPENSATION = "; compensation did not finish: "

RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
"""Release the lease only if this saga holds it."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Saga:
    """One saga of one corpus: its record in Redis and its operations."""

    def __init__(self, corpus: Corpus, saga_id: str) -> None:
        self.corpus = corpus
        self.saga_id = saga_id
        self.client = corpus.redis.client
        self.key = keys.corpus_saga(corpus.name, saga_id)
        self.lease = keys.corpus_saga_lease(corpus.name)

    # -- state -------------------------------------------------------------------------

    def record(self) -> SagaRecord | None:
        raw = self.client.hmget(self.key, list(RECORD_FIELDS))
        values = {f: _text(v) for f, v in zip(RECORD_FIELDS, raw, strict=True) if v is not None}
        if "state" not in values:
            return None
        return SagaRecord.model_validate({k: v for k, v in values.items() if v != ""})

    def require(self) -> SagaRecord:
        found = self.record()
        if found is None:
            raise LookupError(f"no saga {self.saga_id} on corpus {self.corpus.name!r}")
        return found

    def steps(self) -> dict[int, StepRecord]:
        raw = self.client.hgetall(self.key)
        out: dict[int, StepRecord] = {}
        for field, value in raw.items():
            name = _text(field)
            if name.startswith(STEP_FIELD):
                out[int(name[len(STEP_FIELD) :])] = StepRecord.model_validate_json(value)
        return out

    def _set(self, **fields: Any) -> None:
        fields["updated_at"] = utc_now().isoformat()
        self.client.hset(
            self.key, mapping={k: "" if v is None else str(v) for k, v in fields.items()}
        )

    # -- the saga ----------------------------------------------------------------------

    def begin(self, batch_id: str, steps_total: int, documents: int, ttl: int) -> SagaRecord:
        """Create the saga and take the corpus's lease (idempotent: a merge that runs
        again finds its saga). Fails the saga, changing nothing, if another holds it."""
        existing = self.record()
        if existing is not None:
            return existing
        now = utc_now().isoformat()
        holder = None
        if not self.client.set(self.lease, self.saga_id, nx=True, ex=ttl):
            holder = self.client.get(self.lease)
            if holder is not None and _text(holder) == self.saga_id:
                holder = None
        state = "running" if holder is None else "failed"
        fields = {
            "saga_id": self.saga_id,
            "corpus": self.corpus.name,
            "batch_id": batch_id,
            "state": state,
            "steps_total": steps_total,
            "steps_done": 0,
            "documents": documents,
            "created_at": now,
        }
        if holder is not None:
            fields["cause"] = (
                f"corpus {self.corpus.name!r} is busy: saga {_text(holder)} is adding a batch "
                "to it; nothing was changed (run the batch again when that saga ends)"
            )
        self._set(**fields)
        self.client.zadd(
            keys.corpus_saga_index(self.corpus.name), {self.saga_id: utc_now().timestamp()}
        )
        record = self.require()
        if record.state == "failed":
            self._announce(record, compensated=0, superseded=0)
        return record

    def run_step(
        self, step: int, items: Sequence[tuple[str, str]], *, correlation_id: str | None = None
    ) -> SagaRecord:
        """Apply one step (module docstring); nothing when the saga is no longer running
        or the step is done already."""
        record = self.require()
        if record.state != "running":
            return record
        field = f"{STEP_FIELD}{step}"
        raw = self.client.hget(self.key, field)
        done = raw is not None and StepRecord.model_validate_json(raw).status != "applying"
        if not done:
            self.client.expire(self.lease, _lease_ttl(self.client.ttl(self.lease)))
            if raw is None:
                self._record_step(step, items, field)
            self.corpus.index_documents(
                [{"id": d, "text": t} for d, t in items], correlation_id=correlation_id
            )
            applied = StepRecord.model_validate_json(self.client.hget(self.key, field))
            if applied.status == "applying":
                self.client.hset(
                    self.key, field, applied.model_copy(update={"status": "done"}).model_dump_json()
                )
        self._set(steps_done=max(record.steps_done, step + 1))
        return self.require()

    def _record_step(self, step: int, items: Sequence[tuple[str, str]], field: str) -> None:
        digests = [(d, NewText.of(t).digest) for d, t in items]
        planned, needed = plan_step(step, digests, self.corpus.digests(d for d, _ in digests))
        old = self.corpus.current_texts(needed) if needed else {}
        planned = with_old_texts(planned, old)
        self.client.hsetnx(self.key, field, planned.model_dump_json())  # first writer wins

    def complete(self) -> SagaRecord:
        """Every step applied: the saga is completed and the lease released."""
        record = self.require()
        if record.state == "running":
            steps = self.steps()
            self._set(
                state="completed",
                steps_done=record.steps_total,
                added=sum(len(s.added) for s in steps.values()),
                replaced=sum(len(s.replaced) for s in steps.values()),
            )
            self._release()
        return self.require()

    def compensate(
        self,
        cause: str,
        failed_step: int | None = None,
        *,
        correlation_id: str | None = None,
        resume: bool = False,
    ) -> SagaRecord:
        """Undo the applied steps in reverse (idempotent: a compensation that was
        interrupted resumes), then announce ``batch.failed``. ``resume`` also takes up a
        compensation that had failed for good (``crd corpus jobs NAME --compensate ID``)."""
        record = self.require()
        if record.state in ("completed", "compensated") or (
            record.state == "failed" and not (resume and self.steps())
        ):
            return record
        if record.state == "running":
            self._set(state="compensating", cause=cause[:MAX_CAUSE_CHARS], failed_step=failed_step)
        elif record.state == "failed":
            self._set(state="compensating", cause=(record.cause or cause).split(COMPENSATION)[0])
        steps = self.steps()
        superseded = 0
        for number in sorted(steps, reverse=True):
            step = steps[number]
            if step.status != "compensated":
                step = self._undo(step, correlation_id)
            superseded += len(step.superseded)
            self._set(steps_done=sum(1 for s in self.steps().values() if s.status != "compensated"))
        self._set(state="compensated", steps_done=0)
        self._release()
        final = self.require()
        self._announce(final, compensated=len(steps), superseded=superseded)
        return final

    def compensation_failed(self, error: str) -> SagaRecord:
        """The compensation failed for good (after its retries): the saga is failed, with
        what to run to resume it; the lease is kept (no other saga may start meanwhile)."""
        record = self.require()
        if record.state == "compensating":
            resume = f"crd corpus jobs {self.corpus.name} --compensate {self.saga_id}"
            cause = f"{record.cause}{COMPENSATION}{error} (resume: {resume})"
            self._set(state="failed", cause=cause[: MAX_CAUSE_CHARS * 2])
        return self.require()

    def _undo(self, step: StepRecord, correlation_id: str | None) -> StepRecord:
        ids = [*step.added, *step.replaced]
        remove, restore, superseded = undo_plan(step, self.corpus.digests(ids))
        if restore:
            self.corpus.index_documents(
                [{"id": d, "text": t} for d, t in restore], correlation_id=correlation_id
            )
        if remove:
            self.corpus.remove_documents(remove, correlation_id=correlation_id)
        undone = step.model_copy(update={"status": "compensated", "superseded": superseded})
        self.client.hset(self.key, f"{STEP_FIELD}{step.step}", undone.model_dump_json())
        return undone

    def _release(self) -> None:
        try:
            self.client.eval(RELEASE, 1, self.lease, self.saga_id)
        except Exception:  # it lapses after its TTL anyway
            log.warning("could not release the saga lease of %s", self.corpus.name, exc_info=True)

    def _announce(self, record: SagaRecord, *, compensated: int, superseded: int) -> None:
        """``batch.failed`` into the outbox (a repeat has the same event id)."""
        emit(
            BatchFailedEvent(
                event_id=event_id_for(BATCH_FAILED, self.saga_id),
                aggregate_id=record.batch_id,
                payload=BatchFailedPayload(
                    batch_id=record.batch_id,
                    corpus=record.corpus,
                    saga_id=record.saga_id,
                    cause=record.cause or "unknown",
                    failed_step=record.failed_step,
                    steps_total=record.steps_total,
                    compensated_steps=compensated,
                    superseded=superseded,
                ),
            )
        )


def _lease_ttl(current: int) -> int:
    """Renew the lease to at least BATCH_TTL (its TTL from ``begin``)."""
    from redundancy.config import get_settings

    return max(int(current or 0), get_settings().batch_ttl)


def list_sagas(corpus: Corpus, limit: int = 100) -> list[SagaRecord]:
    """The corpus's newest sagas first."""
    ids = corpus.redis.client.zrevrange(keys.corpus_saga_index(corpus.name), 0, limit - 1)
    found = (Saga(corpus, _text(i)).record() for i in ids)
    return [r for r in found if r is not None]
