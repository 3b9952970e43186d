"""Corpus commands, queries and the projector (README: Corpora).

Commands (``index``, ``remove``, ``check_and_index``) validate, decide from the index
which events the change needs (a re-index of the same text needs none), append them to
the shard's event store and project them, shard by shard:

* Redis store: the events are appended by the shard's apply script, in the same atomic
  step that applies them, only if the shard's index is at the stream's tail and still at
  the position it was read at (else: catch up, read again, retry). The store and the
  index never disagree.
* Kafka store: the events are produced (acknowledged by every replica), then projected
  by ``catch_up``, which reads from the store whatever it was not handed.

Once stored, the events also go on the event bus (``CORPUS_PUBLISH_EVENTS``), where the
corpus projector handler (``redundancy.corpus.projector``) catches up a shard a writer
left behind, and other handlers see every change.

The projector's one step (``_apply_events``) applies events at their store positions:
it reads the shard's recorded position and the documents concerned, plans with the pure
``plan_apply``, and writes only if the shard is still where it was read (compare and
set). A step is atomic, so a projector killed at any point resumes from the recorded
position and applies nothing twice; ``catch_up`` loops over steps, ``rebuild`` runs it
into a fresh generation of the index and swaps it in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from redundancy import keys
from redundancy.core.corpus import (
    FEATURE_RECORD,
    INDEX_ROWS,
    QUERY_MODES,
    Change,
    CorpusConfig,
    IndexChange,
    Match,
    NewText,
    Outcome,
    RemoveChange,
    bound_survivors,
    derive,
    plan_apply,
    shard_of,
    sort_matches,
    texts_needed,
    validate_corpus_name,
    validate_doc_id,
    verify,
)
from redundancy.core.text import hash_normalised, normalise, validate_text
from redundancy.corpus.connection import CorpusRedis, corpus_client
from redundancy.corpus.index import CorpusIndex, StaleGenerationError
from redundancy.corpus.store import EventStore, StoredEvent, store_from_settings
from redundancy.errors import InvalidInputError, RedundancyError
from redundancy.events.errors import InvalidEventError
from redundancy.events.models import (
    CorpusDocumentPayload,
    DocumentIndexedEvent,
    DocumentIndexedPayload,
    DocumentRemovedEvent,
    DomainEvent,
    DuplicateDetectedEvent,
    DuplicateDetectedPayload,
    DuplicateMatch,
)
from redundancy.events.wire import WireMessage

log = logging.getLogger(__name__)

MAX_QUERY_LIMIT = 10_000
EXACT_CHUNK = 4096
"""Texts exact mode loads and checks at once (bounds its memory)."""
MAX_RETRIES = 100
"""Compare-and-set attempts of one step before giving up (each retry follows progress)."""

Policy = str
POLICIES = ("index", "reject", "reject-exact")
"""check_and_index: always index; reject near-duplicates; reject only identical texts."""


class UnknownCorpusError(InvalidInputError):
    """No corpus of that name."""


class CorpusExistsError(InvalidInputError):
    """A corpus of that name exists already (with other settings)."""


class CorpusBusyError(RedundancyError):
    """A shard kept moving under a step: too many concurrent writers (retry later)."""


class IndexSummary(BaseModel):
    """What ``index_documents`` / ``remove_documents`` did, per outcome."""

    model_config = ConfigDict(frozen=True)

    corpus: str
    indexed: int = 0
    replaced: int = 0
    unchanged: int = 0
    removed: int = 0
    absent: int = 0

    @classmethod
    def of(cls, corpus: str, outcomes: Iterable[Outcome | None]) -> IndexSummary:
        counts: dict[str, int] = {}
        for outcome in outcomes:
            if outcome is not None:
                counts[outcome] = counts.get(outcome, 0) + 1
        return cls(corpus=corpus, **counts)


class SimilarResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    corpus: str
    threshold: float
    mode: str
    matches: list[Match]
    candidates: int
    """Documents verified with the scorer (indexed: LSH candidates that passed bounds
    1-2; exact: documents bounds 1-2 could not rule out)."""


class CheckResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    corpus: str
    id: str
    action: str
    """indexed, replaced, unchanged or rejected."""
    matches: list[Match]


# --- registry ------------------------------------------------------------------------------


def _registry(redis: CorpusRedis) -> dict[str, CorpusConfig]:
    raw = redis.client.hgetall(keys.corpus_registry())
    return {
        (k.decode() if isinstance(k, bytes) else k): CorpusConfig.model_validate_json(v)
        for k, v in raw.items()
    }


def list_corpora(redis: CorpusRedis | None = None) -> list[CorpusConfig]:
    return sorted(_registry(redis or corpus_client()).values(), key=lambda c: c.name)


def create_corpus(
    name: str,
    threshold: float | None = None,
    algorithm: str | None = None,
    shards: int | None = None,
    *,
    bands: int | None = None,
    owner: str | None = None,
    exist_ok: bool = False,
    redis: CorpusRedis | None = None,
) -> Corpus:
    """A new corpus (its store too); with ``exist_ok``, an existing one of that name.
    ``bands`` overrides the LSH bands that follow from the threshold (more: higher recall
    of pairs near the threshold, ~10 bytes of Redis per band per document, and more
    chance candidates per query). ``owner``: the HTTP API user it belongs to."""
    from pydantic import ValidationError

    fields: dict[str, Any] = {"threshold": threshold, "algorithm": algorithm, "shards": shards,
                              "owner": owner}  # fmt: skip
    if bands is not None:
        fields["index"] = {"bands": bands, "rows": INDEX_ROWS}
    try:
        config = CorpusConfig(name=name, **{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise InvalidInputError(
            "invalid corpus: "
            + "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        ) from None
    redis = redis or corpus_client()
    if not redis.client.hsetnx(keys.corpus_registry(), name, config.model_dump_json()):
        existing = get_corpus(name, redis=redis)
        if exist_ok:
            return existing
        have = existing.config
        raise CorpusExistsError(
            f"corpus {name!r} exists already (threshold {have.threshold}, {have.algorithm}, "
            f"{have.shards} shards)"
        )
    corpus = Corpus(config, redis)
    corpus.store.create(config)
    return corpus


def get_corpus(name: str, *, owner: str | None = None, redis: CorpusRedis | None = None) -> Corpus:
    """Corpus ``name``. With ``owner`` (the HTTP API's callers) it must be theirs: any
    other is unknown, and the error lists no corpora (they may be other users')."""
    validate_corpus_name(name)
    redis = redis or corpus_client()
    raw = redis.client.hget(keys.corpus_registry(), name)
    config = None if raw is None else CorpusConfig.model_validate_json(raw)
    if owner is not None and (config is None or config.owner != owner):
        raise UnknownCorpusError(f"no corpus {name!r} of {owner!r}")
    if config is None:
        known = sorted(_registry(redis))
        hint = f" (corpora: {', '.join(known)})" if known else " (no corpus exists yet)"
        raise UnknownCorpusError(f"unknown corpus {name!r}{hint}")
    return Corpus(config, redis)


# --- item validation -----------------------------------------------------------------------


def validate_items(items: Any, max_chars: int) -> list[tuple[str, str]]:
    """``(id, text)`` from ``{"id", "text"}`` items or plain texts (id: the content hash).

    All-or-nothing: every problem is listed in one InvalidInputError, so a bad item never
    leaves half a command applied. Repeats of an id with the same text count once; with
    another text they are an error (the command would not say which one wins).
    """
    if isinstance(items, str | bytes | dict) or not isinstance(items, Iterable):
        raise InvalidInputError("items must be a list of texts or {id, text} objects")
    problems: list[str] = []
    out: dict[str, str] = {}
    for position, item in enumerate(items):
        try:
            if isinstance(item, dict):
                if "text" not in item:
                    raise InvalidInputError("has no text")
                text = validate_text(item["text"], max_chars=max_chars)
                doc_id = validate_doc_id(item.get("id"))
            else:
                text = validate_text(item, max_chars=max_chars)
                doc_id = hash_normalised(normalise(text))
            if doc_id in out and normalise(out[doc_id]) != normalise(text):
                raise InvalidInputError(f"repeats id {doc_id!r} with another text")
            out[doc_id] = text
        except InvalidInputError as exc:
            problems.append(f"item {position}: {exc}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InvalidInputError(
            "invalid items, nothing was indexed: " + "; ".join(problems[:5]) + more
        )
    return list(out.items())


# --- the corpus ------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One event a command appends, with what it asks of the index."""

    change: Change
    message: WireMessage


class Corpus:
    """One corpus: its configuration, index and store (see the module docstring)."""

    def __init__(
        self, config: CorpusConfig, redis: CorpusRedis, store: EventStore | None = None
    ) -> None:
        from redundancy.config import get_settings

        self.config = config
        self.redis = redis
        self.index = CorpusIndex(redis, config)
        self.store = store or store_from_settings(redis)
        settings = get_settings()
        self.max_chars = settings.max_text_chars
        self.apply_batch = settings.corpus_apply_batch
        self.workers = settings.cdist_workers  # every core in-process, 1 per worker process
        self.publish_events = settings.corpus_publish_events
        self.signing_keys = _signing_keys()

    @property
    def name(self) -> str:
        return self.config.name

    # -- commands ----------------------------------------------------------------------

    def index_documents(self, items: Any, *, correlation_id: str | None = None) -> IndexSummary:
        """Add or replace documents by id (idempotent: the same id and text is one
        document, and indexing it again appends nothing)."""
        validated = validate_items(items, self.max_chars)
        entries: dict[int, list[_Entry]] = {}
        for doc_id, text in validated:
            new = NewText.of(text)
            event = self._indexed_event(doc_id, text, new, correlation_id)
            entries.setdefault(shard_of(doc_id, self.config.shards), []).append(
                _Entry(IndexChange(doc_id, new), self._wire(event))
            )
        return IndexSummary.of(self.name, self._write_all(entries))

    def remove_documents(self, ids: Any, *, correlation_id: str | None = None) -> IndexSummary:
        if isinstance(ids, str) or not isinstance(ids, Iterable):
            raise InvalidInputError("ids must be a list of document ids")
        entries: dict[int, list[_Entry]] = {}
        for doc_id in dict.fromkeys(validate_doc_id(i) for i in ids):
            event = DocumentRemovedEvent(
                aggregate_id=f"{self.name}/{doc_id}",
                payload=CorpusDocumentPayload(corpus=self.name, doc_id=doc_id),
                correlation_id=correlation_id,
            )
            entries.setdefault(shard_of(doc_id, self.config.shards), []).append(
                _Entry(RemoveChange(doc_id), self._wire(event))
            )
        return IndexSummary.of(self.name, self._write_all(entries))

    def check_and_index(
        self,
        item: Any,
        policy: Policy = "index",
        *,
        threshold: float | None = None,
        limit: int = 20,
        mode: str = "indexed",
        correlation_id: str | None = None,
    ) -> CheckResult:
        """Near-duplicates of ``item`` among the documents indexed before it (its own id
        excluded), then index it unless ``policy`` rejects it; a ``duplicate.detected``
        event records any matches with what was done. Concurrent calls are not
        serialised across shards: two near-duplicates sent at the same instant may both
        be indexed."""
        if policy not in POLICIES:
            raise InvalidInputError(
                f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}"
            )
        [(doc_id, text)] = validate_items([item], self.max_chars)
        found = self.find_similar(text, threshold, min(limit + 1, MAX_QUERY_LIMIT), mode)
        matches = [m for m in found.matches if m.id != doc_id][:limit]
        rejected = (policy == "reject" and matches) or (
            policy == "reject-exact" and any(m.score >= 1.0 for m in matches)
        )
        new = NewText.of(text)
        shard = shard_of(doc_id, self.config.shards)
        batch: list[_Entry] = []
        if not rejected:
            indexed = self._indexed_event(doc_id, text, new, correlation_id)
            batch.append(_Entry(IndexChange(doc_id, new), self._wire(indexed)))
        outcomes = self._write_all({shard: batch}) if batch else []
        action = "rejected" if rejected else str(outcomes[0])
        if matches:
            detected = DuplicateDetectedEvent(
                aggregate_id=f"{self.name}/{doc_id}",
                payload=DuplicateDetectedPayload(
                    corpus=self.name,
                    doc_id=doc_id,
                    content_hash=hash_normalised(new.normalised),
                    threshold=found.threshold,
                    matches=[DuplicateMatch(id=m.id, score=m.score) for m in matches],
                    action=action,
                ),
                correlation_id=correlation_id,
            )
            self._write_all({shard: [_Entry(None, self._wire(detected))]})
        return CheckResult(corpus=self.name, id=doc_id, action=action, matches=matches)

    def _indexed_event(
        self, doc_id: str, text: str, new: NewText, correlation_id: str | None
    ) -> DocumentIndexedEvent:
        return DocumentIndexedEvent(
            aggregate_id=f"{self.name}/{doc_id}",
            payload=DocumentIndexedPayload(
                corpus=self.name,
                doc_id=doc_id,
                text=text,
                content_hash=hash_normalised(new.normalised),
            ),
            correlation_id=correlation_id,
        )

    def _wire(self, event: DomainEvent) -> WireMessage:
        return WireMessage.of(event, self.signing_keys)

    def _write_all(self, entries: dict[int, list[_Entry]]) -> list[Outcome | None]:
        """Each shard's events, ``CORPUS_APPLY_BATCH`` per atomic step (a step's script
        stays short, so other clients of the shard wait little)."""
        outcomes: list[Outcome | None] = []
        step = self.apply_batch
        for shard in sorted(entries):
            for start in range(0, len(entries[shard]), step):
                outcomes += self._write(shard, entries[shard][start : start + step])
        return outcomes

    def _write(self, shard: int, entries: list[_Entry]) -> list[Outcome | None]:
        """Append and project one shard's events (module docstring)."""
        changes = [e.change for e in entries]
        data = derive(
            (c.text.normalised for c in changes if isinstance(c, IndexChange)), self.config
        )
        ids = list(dict.fromkeys(c.doc_id for c in changes if c is not None))
        for _ in range(MAX_RETRIES):
            gen, view = self.index.read_view(shard, ids)
            try:
                self._load_old_texts(shard, gen, view, changes, data)
            except StaleGenerationError:
                continue
            plan = plan_apply(view, changes, data)
            effective = [
                e
                for e, outcome in zip(entries, plan.outcomes, strict=True)
                if outcome in ("indexed", "replaced", "removed") or e.change is None
            ]
            if not effective:
                if self.store.appends_with_apply or self._caught_up(shard, view.position):
                    return plan.outcomes
                self.catch_up(shard)  # decided on a view the store had moved past
                continue
            if not self.store.appends_with_apply:
                return self._produce(shard, view.position, entries, effective, plan.outcomes)
            messages = [e.message for e in effective]
            result = self.index.apply(shard, gen, view.position, plan, messages=messages)
            if result.status == "ok":
                self._publish(messages)
                return plan.outcomes
            if result.status == "lag":
                self.catch_up(shard)
        raise CorpusBusyError(f"shard {shard} of corpus {self.name!r} kept changing; try again")

    def _publish(self, messages: list[WireMessage]) -> None:
        """The stored events also go on the event bus (outbox, relay), for event handlers
        (the projector, webhooks); after the store took them, so the bus never announces
        a change the store does not hold. A lost bus write loses no data."""
        if self.publish_events:
            from redundancy.events.emitter import emit_messages

            emit_messages(messages, f"corpus {self.name!r}")

    def _caught_up(self, shard: int, position: str) -> bool:
        """Whether the shard has applied its whole store (the Kafka store's check before
        answering "no event needed"; the Redis store's apply script checks it itself)."""
        return self.store.end(self.config, shard) == position

    def _produce(
        self,
        shard: int,
        seen: str,
        entries: list[_Entry],
        effective: list[_Entry],
        outcomes: list[Outcome | None],
    ) -> list[Outcome | None]:
        """Kafka store: produce the events, then project them. When the store held events
        after the position the decision was made at (a crash left them unprojected, or
        another writer came first), the entries judged to need no event are decided
        again on the caught-up shard."""
        positions = self.store.append(self.config, shard, [e.message for e in effective])
        # On the bus before projecting: if this process dies in catch_up, the projector
        # handler brings the shard up to date on these very events.
        self._publish([e.message for e in effective])
        known = {p: e.change for p, e in zip(positions, effective, strict=True)}
        self.catch_up(shard, until=positions[-1], known=known)
        expected_first = str(int(seen) + 1) if seen else "0"
        skipped = [e for e in entries if e not in effective]
        if positions[0] == expected_first or not skipped:
            return outcomes
        done = [o for e, o in zip(entries, outcomes, strict=True) if e in effective]
        return done + self._write(shard, skipped)

    def _load_old_texts(
        self,
        shard: int,
        gen: str,
        view: Any,
        changes: Sequence[Change],
        data: dict[str, tuple[bytes, frozenset[int]]],
    ) -> None:
        needed = texts_needed(view, changes)
        if needed:
            self.index.load_texts(shard, gen, view, needed)
            old = [view.docs[d].normalised or "" for d in needed]
            data.update(derive((t for t in old if t not in data), self.config))

    # -- the projector -----------------------------------------------------------------

    def catch_up(
        self,
        shard: int,
        *,
        generation: str = "",
        until: str | None = None,
        known: dict[str, Change] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> str:
        """Apply the store's events after the shard's recorded position (up to ``until``,
        or its end) to the index, ``CORPUS_APPLY_BATCH`` at a time; ``known`` hands over
        events already in memory by position. Returns the position reached."""
        target = None if until is None else self.store.order(until)
        stale = 0
        while stale <= MAX_RETRIES:
            gen, view = self.index.read_view(shard, generation=generation)
            if target is not None and self.store.order(view.position) >= target:
                return view.position
            events = self._known_slice(view.position, until, known)
            if events is None:
                stored = self.store.read(self.config, shard, view.position, self.apply_batch)
                events = [(s.position, self._change(s)) for s in stored]
            if not events:
                return view.position
            if self._apply_events(shard, gen, view.position, events):
                stale = 0
                if on_step:
                    on_step(len(events))
            else:
                stale += 1
        raise CorpusBusyError(f"shard {shard} of corpus {self.name!r} did not settle")

    def _known_slice(
        self, position: str, until: str | None, known: dict[str, Change] | None
    ) -> list[tuple[str, Change]] | None:
        """The events from ``position`` to ``until`` when all are in ``known`` (Kafka
        offsets are consecutive), else None (read them from the store)."""
        if not known or until is None or not until.isdigit():
            return None
        start = int(position) + 1 if position else 0
        wanted = [str(p) for p in range(start, int(until) + 1)][: self.apply_batch]
        if not all(p in known for p in wanted):
            return None
        return [(p, known[p]) for p in wanted]

    def _apply_events(
        self, shard: int, gen: str, position: str, events: Sequence[tuple[str, Change]]
    ) -> bool:
        """One projector step: apply ``events`` (which follow ``position``) atomically.
        False when the shard moved meanwhile (the caller reads it again)."""
        changes = [c for _, c in events]
        ids = list(dict.fromkeys(c.doc_id for c in changes if c is not None))
        now_gen, view = self.index.read_view(shard, ids, generation=gen)
        if now_gen != gen or view.position != position:
            return False
        data = derive(
            (c.text.normalised for c in changes if isinstance(c, IndexChange)), self.config
        )
        try:
            self._load_old_texts(shard, gen, view, changes, data)
        except StaleGenerationError:
            return False
        plan = plan_apply(view, changes, data)
        result = self.index.apply(shard, gen, position, plan, new_position=events[-1][0])
        return result.status == "ok"

    def _event(self, stored: StoredEvent) -> DomainEvent | None:
        """The stored event, verified (when a key is set); None for an entry that is not
        one of ours -- unreadable, forged or unsigned -- which is logged, counted and
        skipped at its position: anyone who can write to the store could otherwise stop
        the corpus with one entry, and such an entry must not change the index."""
        try:
            return stored.message.event(self.signing_keys)
        except InvalidEventError as exc:
            from redundancy.events import metrics as event_metrics  # the rare path

            log.error(
                "corpus %s: event-store entry %s skipped: %s", self.name, stored.position, exc
            )
            event_metrics.CORPUS_EVENTS_SKIPPED.labels(self.name).inc()
            return None

    def _change(self, stored: StoredEvent) -> Change:
        """What a stored event asks of the index."""
        event = self._event(stored)
        if isinstance(event, DocumentIndexedEvent):
            return IndexChange(event.payload.doc_id, NewText.of(event.payload.text))
        if isinstance(event, DocumentRemovedEvent):
            return RemoveChange(event.payload.doc_id)
        return None

    def project(self, on_step: Callable[[int], None] | None = None) -> dict[int, str]:
        """Catch every shard up with the store (positions reached)."""
        return {s: self.catch_up(s, on_step=on_step) for s in range(self.config.shards)}

    def rebuild(
        self, on_step: Callable[[int], None] | None = None, *, processes: int = 1
    ) -> dict[int, str]:
        """Replay the store into a fresh generation of the index and swap it in, shard by
        shard (``processes`` shards at a time, in forked processes). A rebuild that was
        stopped resumes where its new generation stands. Returns each shard's position."""
        shards = range(self.config.shards)
        if processes <= 1 or self.config.shards == 1:
            return {shard: self.rebuild_shard(shard, on_step) for shard in shards}
        import multiprocessing

        context = multiprocessing.get_context("fork")
        with context.Pool(min(processes, self.config.shards)) as pool:
            reached = {}
            for shard, position, events in pool.imap_unordered(
                _rebuild_shard, [(self.name, s) for s in shards]
            ):
                reached[shard] = position
                if on_step:
                    on_step(events)
        return reached

    def rebuild_shard(self, shard: int, on_step: Callable[[int], None] | None = None) -> str:
        """Rebuild one shard (see ``rebuild``); the position its new generation reached."""
        for _ in range(MAX_RETRIES):
            live = self.index.live_generation(shard)
            target = str(int(live) + 1)
            if not self.index.is_building(shard, target):
                self.index.delete_generation(shard, target)  # leftovers of an old drop
                self.index.begin_generation(shard, target)
            position = self.catch_up(shard, generation=target, on_step=on_step)
            end = "" if self.store.appends_with_apply else self.store.end(self.config, shard)
            status, _ = self.index.swap(shard, live, target, end)
            if status == "ok":
                self.index.delete_generation(shard, live)
                if not self.store.appends_with_apply:
                    position = self.catch_up(shard)  # produced just before the swap
                return position
        raise CorpusBusyError(f"shard {shard} of corpus {self.name!r}: rebuild could not catch up")

    # -- queries -----------------------------------------------------------------------

    def find_similar(
        self, text: Any, threshold: float | None = None, limit: int = 20, mode: str = "indexed"
    ) -> SimilarResult:
        """Indexed documents scoring ``>= threshold`` (default: the corpus minimum) against
        ``text``, best first, at most ``limit``. Every match is verified with the scorer
        (precision 1.0); ``mode="exact"`` also finds every one (recall 1.0)."""
        return self.find_similar_many([text], threshold, limit, mode)[0]

    def find_similar_many(
        self,
        texts: Sequence[Any],
        threshold: float | None = None,
        limit: int = 20,
        mode: str = "indexed",
    ) -> list[SimilarResult]:
        """``find_similar`` for each of ``texts`` (a batch's chunk): every text is
        validated first; exact mode reads the index's feature tables once for all."""
        valid = [validate_text(t, max_chars=self.max_chars) for t in texts]
        threshold = self.config.check_threshold(threshold)
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_QUERY_LIMIT
        ):
            raise InvalidInputError(
                f"limit must be an integer from 1 to {MAX_QUERY_LIMIT}, got {limit!r}"
            )
        if mode not in QUERY_MODES:
            raise InvalidInputError(
                f"unknown mode {mode!r}; choose one of {', '.join(QUERY_MODES)}"
            )
        tables = self.index.feature_tables() if mode == "exact" and valid else None
        results = []
        for text in valid:
            query = normalise(text)
            if mode == "exact":
                matches, checked = self._exact(query, threshold, tables)
            else:
                record, fields = derive([query], self.config)[query]
                found = self.index.candidates(record, sorted(fields), threshold)
                candidates = [(d, t) for d, t, _ in found]
                matches = verify(query, candidates, threshold, self.config.algorithm, self.workers)
                checked = len(found)
            results.append(
                SimilarResult(
                    corpus=self.name,
                    threshold=threshold,
                    mode=mode,
                    matches=matches[:limit],
                    candidates=checked,
                )
            )
        return results

    def _exact(
        self, query: str, threshold: float, tables: list[tuple[str, np.ndarray]] | None = None
    ) -> tuple[list[Match], int]:
        """Every document through bounds 1-2 on the stored features (numpy), then the
        survivors' texts through the scorer, a chunk at a time. (Bound 3 pays off when a
        text's projections serve many pairs, as in a batch; for one query, building them
        costs more than rapidfuzz's bit-parallel score.) ``tables``: the feature tables
        read already (read here when None)."""
        record = derive([query], self.config)[query][0]
        mine = np.frombuffer(record, dtype=FEATURE_RECORD)[0]
        matches: list[Match] = []
        checked = 0
        for shard, (gen, table) in enumerate(tables or self.index.feature_tables()):
            slots = np.flatnonzero(bound_survivors(mine, table, threshold))
            checked += int(slots.size)
            for start in range(0, slots.size, EXACT_CHUNK):
                chunk = slots[start : start + EXACT_CHUNK].tolist()
                try:
                    found = self.index.texts(shard, gen, chunk)
                except StaleGenerationError:
                    return self._exact(query, threshold)  # rebuilt meanwhile: start again
                matches += verify(query, found, threshold, self.config.algorithm, self.workers)
        return sort_matches(matches), checked

    # -- inspection and maintenance ----------------------------------------------------

    def stats(self) -> dict[str, Any]:
        shards = self.index.stats()
        store_counts = [self.store.count(self.config, s.shard) for s in shards]
        store_ends = [self.store.end(self.config, s.shard) for s in shards]
        return {
            "corpus": self.name,
            "threshold": self.config.threshold,
            "algorithm": self.config.algorithm,
            "shards": self.config.shards,
            "index": self.config.params.model_dump(),
            "event_store": self.store.kind,
            "documents": sum(s.documents for s in shards),
            "events": sum(store_counts),
            "lagging_shards": [
                s.shard for s, end in zip(shards, store_ends, strict=True) if s.position != end
            ],
            "band_entries": sum(s.band_entries for s in shards),
            "per_shard": [
                {
                    "shard": s.shard,
                    "generation": s.generation,
                    "documents": s.documents,
                    "slots": s.slots,
                    "buckets": s.buckets,
                    "position": s.position,
                    "store_end": end,
                    "building": s.building,
                }
                for s, end in zip(shards, store_ends, strict=True)
            ],
        }

    def export(self) -> Iterator[dict[str, str]]:
        """The live documents as given (original texts), replayed from the store."""
        for shard in range(self.config.shards):
            latest: dict[str, str] = {}
            position = ""
            while True:
                batch = self.store.read(self.config, shard, position, self.apply_batch)
                if not batch:
                    break
                for stored in batch:
                    event = self._event(stored)
                    if isinstance(event, DocumentIndexedEvent):
                        latest[event.payload.doc_id] = event.payload.text
                    elif isinstance(event, DocumentRemovedEvent):
                        latest.pop(event.payload.doc_id, None)
                position = batch[-1].position
            for doc_id in sorted(latest):
                yield {"id": doc_id, "text": latest[doc_id]}

    def current_texts(self, ids: Iterable[str]) -> dict[str, str]:
        """The texts of live documents as they were given (the index keeps only the
        normalised form), read back from the store: newest first on the Redis store,
        stopping once every id is found; a read of the shard's whole log on Kafka. Ids
        not live in the corpus are left out."""
        wanted: dict[int, set[str]] = {}
        for doc_id in ids:
            wanted.setdefault(shard_of(doc_id, self.config.shards), set()).add(doc_id)
        found: dict[str, str] = {}
        read_back = getattr(self.store, "read_back", None)
        for shard, pending in sorted(wanted.items()):
            latest: dict[str, str | None] = {}
            position = ""
            while read_back is None or len(latest) < len(pending):
                if read_back is not None:
                    batch = read_back(self.config, shard, position, self.apply_batch)
                else:
                    batch = self.store.read(self.config, shard, position, self.apply_batch)
                if not batch:
                    break
                for stored in batch:
                    event = self._event(stored)
                    found_id = getattr(event.payload, "doc_id", None) if event else None
                    if not isinstance(found_id, str) or found_id not in pending:
                        continue
                    doc_id = found_id
                    if read_back is not None and doc_id in latest:
                        continue  # newest first: the first event of an id is its latest
                    if isinstance(event, DocumentIndexedEvent):
                        latest[doc_id] = event.payload.text
                    elif isinstance(event, DocumentRemovedEvent):
                        latest[doc_id] = None
                position = batch[-1].position
            found.update({d: t for d, t in latest.items() if t is not None})
        return found

    def digests(self, ids: Iterable[str]) -> dict[str, str | None]:
        """The content digest (``NewText.digest``) each id has in the index, None when
        absent: one read per shard concerned."""
        by_shard: dict[int, list[str]] = {}
        for doc_id in dict.fromkeys(ids):
            by_shard.setdefault(shard_of(doc_id, self.config.shards), []).append(doc_id)
        out: dict[str, str | None] = {}
        for shard, shard_ids in sorted(by_shard.items()):
            _gen, view = self.index.read_view(shard, shard_ids)
            out.update({d: (view.docs[d].digest if d in view.docs else None) for d in shard_ids})
        return out

    def drop(self) -> None:
        """Delete the corpus: its index, its store and its registry entry."""
        self.index.drop()
        self.store.drop(self.config)
        sagas = self.redis.client.zrange(keys.corpus_saga_index(self.name), 0, -1)
        self.redis.client.delete(
            keys.corpus_saga_index(self.name),
            keys.corpus_saga_lease(self.name),
            *(keys.corpus_saga(self.name, _text(s)) for s in sagas),
        )
        self.redis.client.hdel(keys.corpus_registry(), self.name)


def _rebuild_shard(job: tuple[str, int]) -> tuple[int, str, int]:
    """One shard's rebuild in a pool process (its own Redis client): shard, position,
    events replayed."""
    name, shard = job
    applied = 0

    def count(n: int) -> None:
        nonlocal applied
        applied += n

    position = get_corpus(name).rebuild_shard(shard, count)
    return shard, position, applied


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _signing_keys() -> tuple[bytes, ...]:
    from redundancy.events.wire import configured_signing_keys

    return configured_signing_keys()


def dump(result: BaseModel) -> dict[str, Any]:
    """A result as the JSON dict a task returns."""
    out: dict[str, Any] = json.loads(result.model_dump_json())
    return out
