"""A corpus's index (the read model) in Redis: reads, atomic applies, queries.

Thin wrappers over the shard scripts (``redundancy.corpus.scripts``): this module turns
plans and queries into script arguments and replies into the core's types, and holds no
rules of its own (those are in ``redundancy.core.corpus``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from redundancy import keys
from redundancy.core.corpus import (
    FEATURE_RECORD,
    ApplyPlan,
    CorpusConfig,
    ShardView,
    StoredDoc,
)
from redundancy.corpus.connection import CorpusRedis, ScriptCall
from redundancy.corpus.scripts import (
    APPLY,
    BUCKET_BASE,
    FEATURES,
    QUERY,
    READ,
    RECORDS_PER_CHUNK,
    SWAP,
    TEXTS,
)
from redundancy.events.wire import WireMessage

DELETE_CHUNK = 1000
"""Keys unlinked per command when a generation is deleted."""


class StaleGenerationError(Exception):
    """The generation read is no longer readable (a rebuild replaced it): read again."""


@dataclass(frozen=True)
class ApplyResult:
    status: str
    """``ok``; ``stale`` (the shard moved since it was read: read again); ``lag`` (the
    store holds events the index has not applied: catch up first)."""
    position: str
    appended: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShardStats:
    shard: int
    generation: str
    position: str
    documents: int
    slots: int
    band_entries: int
    buckets: int
    building: str | None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def split_doc(value: Any) -> tuple[str, str]:
    """A ``docs`` hash value: ``(document id, normalised text)``."""
    raw = value if isinstance(value, bytes) else str(value).encode()
    doc_id, _, text = raw.partition(b"\0")
    return doc_id.decode(), text.decode()


class CorpusIndex:
    """The shards of one corpus's index."""

    def __init__(self, redis: CorpusRedis, config: CorpusConfig) -> None:
        self.redis = redis
        self.config = config

    def prefix(self, shard: int) -> str:
        return keys.corpus_shard(self.config.name, shard)

    # -- state ---------------------------------------------------------------------------

    def read_view(
        self, shard: int, doc_ids: Sequence[str] = (), generation: str = ""
    ) -> tuple[str, ShardView]:
        """The generation (the live one unless given) and what it holds for ``doc_ids``."""
        reply = self.redis.run(READ, self.prefix(shard), [generation, *doc_ids])
        gen, position, next_slot = _text(reply[0]), _text(reply[1]), int(reply[2])
        docs: dict[str, StoredDoc] = {}
        for doc_id, value in zip(doc_ids, reply[4:], strict=True):
            if value:
                slot, _, digest = _text(value).partition(":")
                docs[doc_id] = StoredDoc(int(slot), digest)
        return gen, ShardView(position, next_slot, docs)

    def load_texts(
        self, shard: int, generation: str, view: ShardView, doc_ids: Sequence[str]
    ) -> None:
        """Fill in the normalised texts of ``doc_ids`` in ``view`` (in place)."""
        slots = [view.docs[d].slot for d in doc_ids]
        for (doc_id, text), wanted in zip(
            self.texts(shard, generation, slots), doc_ids, strict=True
        ):
            stored = view.docs[wanted]
            view.docs[wanted] = StoredDoc(stored.slot, stored.digest, text)
            if doc_id != wanted:
                raise RuntimeError(f"slot {stored.slot} holds {doc_id!r}, not {wanted!r}")

    def texts(self, shard: int, generation: str, slots: Sequence[int]) -> list[tuple[str, str]]:
        """``(id, normalised text)`` of ``slots`` (each must hold a document)."""
        reply = self.redis.run(TEXTS, self.prefix(shard), [generation, *slots])
        if _text(reply[0]) != "ok":
            raise StaleGenerationError(f"generation {generation} of shard {shard} is gone")
        found = [split_doc(v) for v in reply[1:] if v is not None]
        if len(found) != len(slots):
            raise StaleGenerationError(f"shard {shard} changed while it was read")
        return found

    # -- writes --------------------------------------------------------------------------

    def apply(
        self,
        shard: int,
        generation: str,
        expected: str,
        plan: ApplyPlan,
        *,
        new_position: str = "",
        messages: Sequence[WireMessage] = (),
    ) -> ApplyResult:
        """Apply ``plan`` if the shard is still at ``generation`` and ``expected``; with
        ``messages``, append them to the shard's stream in the same atomic step (the new
        position is then the last of them)."""
        args: list[Any] = [
            generation,
            expected,
            new_position,
            plan.next_slot,
            plan.live_delta,
            len(plan.puts),
            len(plan.deletes),
            len(plan.band_adds),
            len(plan.band_removes),
            len(messages),
        ]
        for put in plan.puts:
            args += [put.doc_id, put.slot, put.digest, put.normalised, put.record]
        for doc_id, slot in plan.deletes:
            args += [doc_id, slot]
        for slot, fields in plan.band_adds:
            args += [slot, ",".join(map(str, fields))]
        for slot, fields in plan.band_removes:
            args += [slot, ",".join(map(str, fields))]
        for message in messages:  # the stream entry exactly as the wire format lays it out
            entry = [value for pair in message.fields().items() for value in pair]
            args += [len(entry), *entry]
        reply = self.redis.run(APPLY, self.prefix(shard), args)
        return ApplyResult(_text(reply[0]), _text(reply[1]), tuple(_text(x) for x in reply[2:]))

    def begin_generation(self, shard: int, generation: str) -> None:
        """Mark ``generation`` of ``shard`` as being built (applies to it are allowed)."""
        meta = keys.corpus_index(self.config.name, shard, int(generation), "meta")
        self.redis.client.hset(meta, "building", "1")

    def is_building(self, shard: int, generation: str) -> bool:
        meta = keys.corpus_index(self.config.name, shard, int(generation), "meta")
        return _text(self.redis.client.hget(meta, "building") or b"") == "1"

    def swap(self, shard: int, live: str, rebuilt: str, end: str) -> tuple[str, str]:
        """Make ``rebuilt`` live if it applied the store up to ``end`` ('' = the stream's
        tail). Returns ``(status, detail)``: ok, lag or moved."""
        reply = self.redis.run(SWAP, self.prefix(shard), [live, rebuilt, end])
        return _text(reply[0]), _text(reply[1]) if len(reply) > 1 else ""

    def delete_generation(self, shard: int, generation: str) -> None:
        """Unlink every key of one generation of a shard (by name: no SCAN)."""
        name = self.config.name
        gen = int(generation)
        meta = keys.corpus_index(name, shard, gen, "meta")
        level, split, slots = self.redis.client.hmget(meta, "level", "split", "next")
        buckets = BUCKET_BASE * 2 ** int(level or 0) + int(split or 0)
        chunks = -(-int(slots or 0) // RECORDS_PER_CHUNK)
        bucket = keys.corpus_index(name, shard, gen, "bucket")
        feat = keys.corpus_index(name, shard, gen, "feat")
        doomed = [keys.corpus_index(name, shard, gen, part) for part in ("ids", "docs")]
        doomed += [f"{bucket}{b}" for b in range(buckets)]
        doomed += [f"{feat}{c}" for c in range(chunks)]
        for start in range(0, len(doomed), DELETE_CHUNK):
            self.redis.client.unlink(*doomed[start : start + DELETE_CHUNK])
        self.redis.client.unlink(meta)  # last: a half-deleted generation still says what it has

    def drop(self) -> None:
        """Every generation of every shard, and the generation pointers."""
        for shard in range(self.config.shards):
            live = self.live_generation(shard)
            for gen in {live, str(int(live) + 1)}:
                self.delete_generation(shard, gen)
            self.redis.client.unlink(keys.corpus_generation(self.config.name, shard))

    def live_generation(self, shard: int) -> str:
        return _text(self.redis.client.get(keys.corpus_generation(self.config.name, shard)) or b"0")

    # -- queries -------------------------------------------------------------------------

    def candidates(
        self, record: bytes, fields: Sequence[int], threshold: float
    ) -> list[tuple[str, str, int]]:
        """Every indexed document sharing a band with the query that bounds 1-2 cannot
        rule out: ``(id, normalised text, bands shared)``, all shards in one pipeline."""
        query = np.frombuffer(record, dtype=FEATURE_RECORD)[0]
        args = [repr(threshold), int(query["length"]), query["hist"].astype("<u2").tobytes()]
        args += list(fields)
        calls: list[ScriptCall] = [(QUERY, self.prefix(s), args) for s in range(self.config.shards)]
        out: list[tuple[str, str, int]] = []
        for reply in self.redis.run_many(calls):
            for i in range(0, len(reply), 2):
                doc_id, text = split_doc(reply[i])
                out.append((doc_id, text, int(reply[i + 1])))
        return out

    def feature_tables(self) -> list[tuple[str, np.ndarray]]:
        """Every shard's live generation and feature table (one pipeline)."""
        calls: list[ScriptCall] = [
            (FEATURES, self.prefix(s), []) for s in range(self.config.shards)
        ]
        out = []
        for reply in self.redis.run_many(calls):
            raw = reply[1] if isinstance(reply[1], bytes) else str(reply[1]).encode()
            usable = len(raw) - len(raw) % FEATURE_RECORD.itemsize
            table = np.frombuffer(raw[:usable], dtype=FEATURE_RECORD)
            out.append((_text(reply[0]), table))
        return out

    # -- inspection ----------------------------------------------------------------------

    def stats(self) -> list[ShardStats]:
        out = []
        for shard in range(self.config.shards):
            live = self.live_generation(shard)
            meta = keys.corpus_index(self.config.name, shard, int(live), "meta")
            raw = {_text(k): _text(v) for k, v in self.redis.client.hgetall(meta).items()}
            nxt = str(int(live) + 1)
            building = nxt if self.is_building(shard, nxt) else None
            out.append(
                ShardStats(
                    shard=shard,
                    generation=live,
                    position=raw.get("pos", ""),
                    documents=int(raw.get("live", 0)),
                    slots=int(raw.get("next", 0)),
                    band_entries=int(raw.get("entries", 0)),
                    buckets=BUCKET_BASE * 2 ** int(raw.get("level", 0)) + int(raw.get("split", 0)),
                    building=building,
                )
            )
        return out

    def snapshot(self, shard: int) -> dict[str, Any]:
        """Everything the live generation of a shard holds, decoded (integrity checks)."""
        client = self.redis.client
        live = self.live_generation(shard)
        gen = int(live)
        name = self.config.name
        stats = next(s for s in self.stats() if s.shard == shard)
        ids = {
            _text(k): _text(v)
            for k, v in client.hgetall(keys.corpus_index(name, shard, gen, "ids")).items()
        }
        docs = {
            int(_text(k)): split_doc(v)
            for k, v in client.hgetall(keys.corpus_index(name, shard, gen, "docs")).items()
        }
        raw = self.feature_tables()[shard][1]
        bucket = keys.corpus_index(name, shard, gen, "bucket")
        entries: dict[int, list[int]] = {}
        for b in range(stats.buckets):
            for field, value in client.hgetall(f"{bucket}{b}").items():
                slots = [int(x) for x in _text(value).split(",")]
                entries.setdefault(int(_text(field)), []).extend(slots)
        return {
            "generation": live,
            "stats": stats,
            "ids": ids,
            "docs": docs,
            "features": raw[: stats.slots],
            "bands": entries,
        }
