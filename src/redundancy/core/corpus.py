"""A living corpus, the pure part: its configuration, the index data of a document, the
projection's planner and the verification of matches (README: Corpora).

A corpus is an event-sourced index: every change is an event in the corpus's store, and
the index is a projection of it. Documents are spread over ``shards`` by a stable hash of
their id; each shard is projected on its own, in store order, and records the store
position it has applied. ``plan_apply`` is the projection's one rule: given what a shard
holds for the documents concerned and the changes that follow its position, it returns
the writes that bring the shard to the new position. It is pure, so the same plan is
made in a command (read-your-writes), in a catch-up and in a rebuild.

What the index keeps per document (besides its normalised text):

* a **feature record** (``FEATURE_RECORD``, 100 bytes): the length and the bucketed
  character histogram of the text as the scorer sees it, so exact mode proves with
  bounds 1-2 of ``redundancy.core.bounds`` which documents cannot reach a threshold
  without reading their texts;
* **band fields**: ``IndexParams.bands`` MinHash LSH band keys (``redundancy.core.lsh``,
  one-permutation hashing) cut to 31 bits, the entries of the shard's LSH buckets, which
  give indexed mode its candidates.

Indexed mode's parameters follow from the corpus's minimum threshold: ``INDEX_ROWS``
rows per band keeps chance collisions of unrelated prose rare (they share ~10% of their
5-shingles, so a band collides with probability ~1e-5), and the bands are the fewest that
miss a pair at the threshold's target Jaccard with probability ``INDEX_MISS_AT_TARGET``,
at most ``MAX_INDEX_BANDS`` (one hashing round; ~10 bytes of Redis each). At 0.8 the cap
binds: ``IndexParams.miss_probability`` gives the miss rate by Jaccard, and the benchmark
measures the recall; ``mode="exact"`` never misses.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from rapidfuzz import process

from redundancy.core.bounds import BOUNDED_SCORERS, MARGIN, BoundPlan, prepare
from redundancy.core.lsh import SHINGLE, LSHParams, band_keys, target_jaccard
from redundancy.core.neardup import MIN_INDEXED_THRESHOLD
from redundancy.core.pairs import uint8_cutoff
from redundancy.core.scorers import DEFAULT_ALGORITHM, DEFAULT_THRESHOLD, get_scorer, is_similar
from redundancy.core.text import hash_normalised, normalise, validate_identifier
from redundancy.errors import InvalidInputError

CORPUS_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
"""Corpus names: lower-case letters, digits, ``.``, ``_``, ``-`` (they go into Redis hash
tags and Kafka topic names)."""

MAX_DOC_ID_CHARS: Final = 512
CORPUS_SCORERS: Final = BOUNDED_SCORERS
"""Scorers a corpus accepts: the index's bounds and LSH model hold only for these."""

MIN_CORPUS_THRESHOLD: Final = MIN_INDEXED_THRESHOLD
"""Lowest minimum threshold of a corpus: below it shingles carry too little signal for
the LSH index (see ``redundancy.core.neardup``)."""

DEFAULT_SHARDS: Final = 8
MAX_SHARDS: Final = 1024
INDEX_ROWS: Final = 5
INDEX_MISS_AT_TARGET: Final = 1e-3
MAX_INDEX_BANDS: Final = 256 // INDEX_ROWS
"""51 bands: one one-permutation-hashing round of 256 bins at 5 rows."""

FIELD_MASK: Final = 0x7FFFFFFF
"""Band keys are kept as 31-bit fields: small integers Redis stores compactly, exact in
Lua's doubles; a false match only adds a candidate, which verification drops."""

HISTOGRAM_CHARS: Final = " etaoinsrhldcumfpgwybvkxjqz.,0123456789'-\":;!?/"
"""Characters with a histogram bucket of their own (every other character shares the
last bucket). Any choice keeps bound 2 valid; frequent characters make it prune more."""

SATURATED: Final = 0xFFFF
"""A histogram count this high is stored as 'unknown' and read as unbounded."""

FEATURE_RECORD: Final = np.dtype([("length", "<u4"), ("hist", "<u2", (48,))])
"""One document's features: 4 + 96 = 100 bytes; a zero length marks an empty slot."""

DIGEST_CHARS: Final = 16
"""Hex digits of the content hash kept in the index (to tell a re-index from a replace)."""

QueryMode = Literal["indexed", "exact"]
QUERY_MODES: Final = ("indexed", "exact")
Outcome = Literal["indexed", "replaced", "unchanged", "removed", "absent"]


def validate_corpus_name(name: object) -> str:
    if not isinstance(name, str) or not CORPUS_NAME.match(name):
        raise InvalidInputError(
            f"invalid corpus name {name!r}: use 1-64 lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def validate_doc_id(doc_id: object) -> str:
    return validate_identifier(doc_id, name="document id", max_chars=MAX_DOC_ID_CHARS)


class IndexParams(BaseModel):
    """MinHash LSH parameters of a corpus's index (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bands: int = Field(ge=1, le=4096)
    rows: int = Field(ge=1, le=16)
    shingle: int = Field(default=SHINGLE, ge=1, le=16)
    seed: int = 1

    @classmethod
    def for_threshold(cls, threshold: float) -> IndexParams:
        target = target_jaccard(threshold)
        hit = target**INDEX_ROWS
        needed = (
            1
            if hit >= 1.0
            else math.ceil(math.log(INDEX_MISS_AT_TARGET) / math.log1p(-hit))
            if hit > 0.0
            else MAX_INDEX_BANDS
        )
        return cls(bands=min(needed, MAX_INDEX_BANDS), rows=INDEX_ROWS)

    @property
    def lsh(self) -> LSHParams:
        return LSHParams(bands=self.bands, rows=self.rows, shingle=self.shingle, seed=self.seed)

    def miss_probability(self, jaccard: float) -> float:
        """Probability that the index misses a pair whose shingle Jaccard is ``jaccard``."""
        return self.lsh.miss_probability(jaccard)


class CorpusConfig(BaseModel):
    """What a corpus is, fixed at creation (its index follows from it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    threshold: float = DEFAULT_THRESHOLD
    """The minimum threshold: queries may ask for any threshold from here to 1."""
    algorithm: str = DEFAULT_ALGORITHM
    shards: int = Field(default=DEFAULT_SHARDS, ge=1, le=MAX_SHARDS)
    index: IndexParams | None = None
    histogram_chars: str = HISTOGRAM_CHARS
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    owner: str | None = None
    """The HTTP API user it belongs to (only they reach it over HTTP); None: made by
    ``crd corpus`` or Python without ``--owner``, reachable from those alone."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_corpus_name(v)

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        if not MIN_CORPUS_THRESHOLD <= v <= 1.0:
            raise ValueError(
                f"a corpus's minimum threshold must be between {MIN_CORPUS_THRESHOLD} and 1.0, "
                f"got {v}"
            )
        return v

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, v: str) -> str:
        get_scorer(v)
        if v not in CORPUS_SCORERS:
            raise ValueError(
                f"a corpus supports the scorers {', '.join(CORPUS_SCORERS)} (the index's "
                f"bounds hold only for them), got {v!r}; batches accept every scorer"
            )
        return v

    @field_validator("histogram_chars")
    @classmethod
    def _buckets(cls, v: str) -> str:
        if len(v) != FEATURE_RECORD["hist"].shape[0] - 1 or len(set(v)) != len(v):
            raise ValueError("histogram_chars must be 47 distinct characters")
        return v

    @model_validator(mode="before")
    @classmethod
    def _index(cls, data: object) -> object:
        """The index parameters follow from the threshold unless given."""
        if isinstance(data, dict) and data.get("index") is None:
            threshold = data.get("threshold", DEFAULT_THRESHOLD)
            if isinstance(threshold, int | float) and 0.0 < threshold <= 1.0:
                data = {**data, "index": IndexParams.for_threshold(float(threshold))}
        return data

    @property
    def params(self) -> IndexParams:
        assert self.index is not None  # set by the validator
        return self.index

    def check_threshold(self, threshold: float | None) -> float:
        """The query threshold: the corpus minimum by default, never below it."""
        if threshold is None:
            return self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise InvalidInputError(f"threshold must be a number, got {threshold!r}")
        if not self.threshold <= threshold <= 1.0:
            raise InvalidInputError(
                f"threshold {threshold} is outside [{self.threshold}, 1.0], the range of corpus "
                f"{self.name!r} (its index finds pairs from its minimum threshold up)"
            )
        return float(threshold)


def shard_of(doc_id: str, shards: int) -> int:
    """The shard of a document: a stable hash of its id (the same in every process)."""
    digest = hashlib.blake2b(doc_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


# --- the data the index keeps per document ------------------------------------------------


@dataclass(frozen=True)
class NewText:
    """A document's text as the index needs it: normalised, with its content digest."""

    normalised: str
    digest: str

    @classmethod
    def of(cls, text: str) -> NewText:
        norm = normalise(text)
        return cls(norm, hash_normalised(norm)[:DIGEST_CHARS])


@dataclass(frozen=True)
class IndexData:
    """Feature records and band fields of some texts, in order."""

    records: np.ndarray
    fields: np.ndarray
    """``len(texts)`` x ``bands`` int64 in ``[0, FIELD_MASK]``."""


def index_data(normalised: Sequence[str], config: CorpusConfig) -> IndexData:
    """Feature records and band fields of normalised texts (numpy, vectorised)."""
    prepared = prepare(normalised, config.algorithm)
    records = np.zeros(len(prepared), dtype=FEATURE_RECORD)
    if not prepared:
        return IndexData(records, np.empty((0, config.params.bands), dtype=np.int64))
    feats = BoundPlan(config.histogram_chars, ()).features(prepared)
    records["length"] = feats.lengths
    records["hist"] = np.minimum(feats.hist, SATURATED)
    lsh = config.params.lsh
    parts = [band_keys(prepared, lsh, r) for r in range(lsh.rounds)]
    keys = np.concatenate(parts, axis=1)
    return IndexData(records, (keys & np.uint64(FIELD_MASK)).astype(np.int64))


def bound_survivors(query: np.ndarray, records: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the ``records`` that bounds 1-2 cannot rule out against the ``query``
    record at ``threshold`` (empty slots never survive). Saturated counts are unbounded."""
    la = np.int64(query["length"])
    lb = records["length"].astype(np.int64)
    need = threshold * (la + lb).astype(np.float64) / 2.0 * (1.0 - MARGIN)
    keep: np.ndarray = (lb > 0) & (np.minimum(la, lb) >= need)
    if keep.any():
        sel = np.flatnonzero(keep)
        qh = query["hist"].astype(np.int64)
        hb = records["hist"][sel].astype(np.int64)
        qh = np.where(qh == SATURATED, np.iinfo(np.int64).max, qh)
        hb = np.where(hb == SATURATED, np.iinfo(np.int64).max, hb)
        common = np.minimum(qh[None, :], hb)
        # an unbounded bucket on both sides bounds nothing: the length bound stands in
        common = np.minimum(common, np.minimum(la, lb[sel])[:, None]).sum(axis=1)
        keep[sel] = common >= need[sel]
    return keep


# --- the projection's planner ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredDoc:
    """What a shard holds for one document."""

    slot: int
    digest: str
    normalised: str | None = None
    """Loaded only when the plan needs the old band fields (replace, remove)."""


@dataclass(frozen=True)
class IndexChange:
    doc_id: str
    text: NewText


@dataclass(frozen=True)
class RemoveChange:
    doc_id: str


Change = IndexChange | RemoveChange | None
"""What one event asks of the index (``None``: an event the index ignores)."""


@dataclass
class ShardView:
    """A shard's state as read for one apply: position, next slot and the documents the
    changes concern (a missing id is not in the index)."""

    position: str
    next_slot: int
    docs: dict[str, StoredDoc]


@dataclass(frozen=True)
class Put:
    doc_id: str
    slot: int
    digest: str
    normalised: str
    record: bytes


@dataclass
class ApplyPlan:
    """The writes that take a shard from ``ShardView.position`` past the changes."""

    next_slot: int
    puts: list[Put] = field(default_factory=list)
    deletes: list[tuple[str, int]] = field(default_factory=list)
    band_adds: list[tuple[int, list[int]]] = field(default_factory=list)
    """``(slot, band fields)`` to add, grouped by slot (one argument per slot in Lua)."""
    band_removes: list[tuple[int, list[int]]] = field(default_factory=list)
    outcomes: list[Outcome | None] = field(default_factory=list)
    """One per change, in order (``None`` for an ignored event)."""

    @property
    def live_delta(self) -> int:
        """Change in the number of documents the shard holds."""
        return sum(1 for o in self.outcomes if o == "indexed") - sum(
            1 for o in self.outcomes if o == "removed"
        )


def texts_needed(view: ShardView, changes: Sequence[Change]) -> list[str]:
    """Ids of stored documents whose old text the plan needs (replaced or removed)."""
    out: list[str] = []
    for change in changes:
        if change is None:
            continue
        stored = view.docs.get(change.doc_id)
        if stored is None or stored.normalised is not None or change.doc_id in out:
            continue
        if isinstance(change, RemoveChange) or stored.digest != change.text.digest:
            out.append(change.doc_id)
    return out


def plan_apply(
    view: ShardView,
    changes: Sequence[Change],
    data: dict[str, tuple[bytes, frozenset[int]]],
) -> ApplyPlan:
    """The writes that apply ``changes`` (in store order) to the shard seen in ``view``.

    ``data`` maps a normalised text to its feature record and band fields, for every text
    the plan adds or removes (``texts_needed`` names the stored ones to load first). The
    plan is idempotent by content: indexing an id with the text it has changes nothing;
    removing an absent id changes nothing.
    """
    plan = ApplyPlan(next_slot=view.next_slot)
    current: dict[str, tuple[int, NewText] | None] = {}
    for change in changes:
        if change is None:
            plan.outcomes.append(None)
            continue
        doc_id = change.doc_id
        if doc_id in current:
            now = current[doc_id]
        else:
            stored = view.docs.get(doc_id)
            now = (
                None
                if stored is None
                else (stored.slot, NewText(stored.normalised or "", stored.digest))
            )
        if isinstance(change, RemoveChange):
            plan.outcomes.append("absent" if now is None else "removed")
            current[doc_id] = None
        elif now is not None and now[1].digest == change.text.digest:
            plan.outcomes.append("unchanged")
            current[doc_id] = now
        elif now is not None:
            plan.outcomes.append("replaced")
            current[doc_id] = (now[0], change.text)
        else:
            plan.outcomes.append("indexed")
            current[doc_id] = (plan.next_slot, change.text)
            plan.next_slot += 1
    for doc_id, final in current.items():
        stored = view.docs.get(doc_id)
        before = None if stored is None else (stored.slot, stored.digest, stored.normalised)
        _diff(plan, doc_id, before, final, data)
    return plan


def _diff(
    plan: ApplyPlan,
    doc_id: str,
    before: tuple[int, str, str | None] | None,
    after: tuple[int, NewText] | None,
    data: dict[str, tuple[bytes, frozenset[int]]],
) -> None:
    """Writes that turn one document's stored state into its final state."""
    if (
        before is not None
        and after is not None
        and (before[0], before[1])
        == (
            after[0],
            after[1].digest,
        )
    ):
        return  # unchanged in the end (perhaps replaced and restored)
    old_fields: frozenset[int] = frozenset()
    if before is not None:
        old_slot, _, old_text = before
        if old_text is None:
            raise ValueError(f"the plan needs the stored text of {doc_id!r} (texts_needed)")
        old_fields = data[old_text][1]
        if after is None or after[0] != old_slot:
            plan.deletes.append((doc_id, old_slot))
            plan.band_removes.append((old_slot, sorted(old_fields)))
            old_fields = frozenset()
    if after is not None:
        slot, text = after
        record, new_fields = data[text.normalised]
        plan.puts.append(Put(doc_id, slot, text.digest, text.normalised, record))
        plan.band_adds.append((slot, sorted(new_fields - old_fields)))
        if before is not None and before[0] == slot:
            plan.band_removes.append((slot, sorted(old_fields - new_fields)))


def derive(
    normalised: Iterable[str], config: CorpusConfig
) -> dict[str, tuple[bytes, frozenset[int]]]:
    """``plan_apply``'s ``data`` for some normalised texts (each distinct text once)."""
    distinct = list(dict.fromkeys(normalised))
    found = index_data(distinct, config)
    return {
        text: (found.records[i].tobytes(), frozenset(found.fields[i].tolist()))
        for i, text in enumerate(distinct)
    }


# --- matches -----------------------------------------------------------------------------


class Match(BaseModel):
    """An indexed document similar to the query, with its exact score (0..1)."""

    model_config = ConfigDict(frozen=True)

    id: str
    score: float


def verify(
    query: str,
    candidates: Sequence[tuple[str, str]],
    threshold: float,
    algorithm: str,
    workers: int = 1,
) -> list[Match]:
    """Candidates ``(id, normalised text)`` scoring ``>= threshold`` against the
    normalised ``query``, best first (ties by id): every match is exact (precision 1.0)."""
    if not candidates:
        return []
    scores = process.cdist(
        [query],
        [text for _, text in candidates],
        scorer=get_scorer(algorithm),
        processor=None,
        score_cutoff=uint8_cutoff(threshold),
        dtype=np.float64,
        workers=workers,
    )[0]
    found = [
        Match(id=doc_id, score=float(score) / 100.0)
        for (doc_id, _), score in zip(candidates, scores.tolist(), strict=True)
        if is_similar(score, threshold)
    ]
    return sort_matches(found)


def sort_matches(matches: Iterable[Match]) -> list[Match]:
    return sorted(matches, key=lambda m: (-m.score, m.id))
