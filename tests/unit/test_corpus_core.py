"""The pure part of corpora: configuration, the projection's planner, bounds, matches."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz

from redundancy.core.corpus import (
    FEATURE_RECORD,
    MAX_INDEX_BANDS,
    ApplyPlan,
    CorpusConfig,
    IndexChange,
    IndexParams,
    NewText,
    RemoveChange,
    ShardView,
    StoredDoc,
    bound_survivors,
    derive,
    plan_apply,
    shard_of,
    texts_needed,
    verify,
)
from redundancy.core.lsh import target_jaccard
from redundancy.core.text import normalise
from redundancy.errors import InvalidInputError

CONFIG = CorpusConfig(name="unit", threshold=0.8, shards=4)


# --- configuration --------------------------------------------------------------------------


def test_index_parameters_follow_from_the_threshold():
    # Given thresholds from the lowest allowed to 1
    params = {t: IndexParams.for_threshold(t) for t in (0.75, 0.8, 0.9, 0.95, 1.0)}
    # Then low thresholds use every band one hashing round allows, higher ones fewer
    assert params[0.8].bands == MAX_INDEX_BANDS and params[0.8].rows == 5
    assert params[0.95].bands < params[0.9].bands <= MAX_INDEX_BANDS
    assert params[1.0].bands == 1
    # and where the cap does not bind, a pair at the target Jaccard is missed rarely
    assert params[0.9].miss_probability(target_jaccard(0.9)) <= 1e-3
    # and the miss rate falls with the pair's similarity
    p = params[0.8]
    assert p.miss_probability(0.69) < 1e-3 < p.miss_probability(0.5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "Bad Name"}, "invalid corpus name"),
        ({"name": "a{b}"}, "invalid corpus name"),
        ({"name": "ok", "threshold": 0.5}, "between 0.75 and 1.0"),
        ({"name": "ok", "algorithm": "partial_ratio"}, "supports the scorers"),
        ({"name": "ok", "algorithm": "ratoi"}, "Did you mean 'ratio'"),
        ({"name": "ok", "shards": 0}, "greater than or equal to 1"),
    ],
)
def test_a_bad_corpus_configuration_is_refused_with_the_reason(fields, message):
    with pytest.raises(ValueError, match=message):
        CorpusConfig(**fields)


def test_query_thresholds_below_the_corpus_minimum_are_refused():
    assert CONFIG.check_threshold(None) == 0.8
    assert CONFIG.check_threshold(0.9) == 0.9
    with pytest.raises(InvalidInputError, match=r"outside \[0.8, 1.0\], the range of corpus"):
        CONFIG.check_threshold(0.79)
    with pytest.raises(InvalidInputError, match="must be a number"):
        CONFIG.check_threshold("0.9")  # type: ignore[arg-type]


def test_configuration_round_trips_as_json():
    again = CorpusConfig.model_validate_json(CONFIG.model_dump_json())
    assert again == CONFIG and again.params == CONFIG.params


def test_shards_are_stable_and_spread():
    # Given many ids
    ids = [f"doc-{i}" for i in range(4000)]
    shards = [shard_of(i, 8) for i in ids]
    # Then every shard gets a fair share, and the function is stable (a fixed value)
    assert min(Counter(shards).values()) > 400
    assert shard_of("doc-1", 8) == shard_of("doc-1", 8) == 6  # blake2b, not hash()


# --- the planner: a Python executor of plans stands in for the Lua script ------------------


class ModelShard:
    """What the apply script does, in dicts: the oracle the planner is checked against."""

    def __init__(self) -> None:
        self.ids: dict[str, tuple[int, str]] = {}
        self.docs: dict[int, tuple[str, str]] = {}
        self.feat: dict[int, bytes] = {}
        self.bands: Counter[tuple[int, int]] = Counter()
        self.next_slot = 0
        self.live = 0

    def view(self, doc_ids, with_texts=()):
        docs = {}
        for d in doc_ids:
            if d in self.ids:
                slot, digest = self.ids[d]
                docs[d] = StoredDoc(slot, digest, self.docs[slot][1] if d in with_texts else None)
        return ShardView("", self.next_slot, docs)

    def apply(self, plan: ApplyPlan) -> None:
        for doc_id, slot in plan.deletes:
            del self.ids[doc_id]
            del self.docs[slot]
            self.feat[slot] = bytes(FEATURE_RECORD.itemsize)
        for put in plan.puts:
            self.ids[put.doc_id] = (put.slot, put.digest)
            self.docs[put.slot] = (put.doc_id, put.normalised)
            self.feat[put.slot] = put.record
        for slot, fields in plan.band_removes:
            for entry in ((f, slot) for f in fields):
                assert self.bands[entry] == 1, f"removing an entry that is not there: {entry}"
                del self.bands[entry]
        for slot, fields in plan.band_adds:
            for entry in ((f, slot) for f in fields):
                assert self.bands[entry] == 0, f"adding an entry twice: {entry}"
                self.bands[entry] += 1
        self.next_slot = plan.next_slot
        self.live += plan.live_delta

    def run(self, changes):
        """Plan and apply ``changes`` as one step (reading old texts when needed)."""
        ids = [c.doc_id for c in changes if c is not None]
        view = self.view(ids)
        view = self.view(ids, with_texts=texts_needed(view, changes))
        texts = [c.text.normalised for c in changes if isinstance(c, IndexChange)]
        texts += [d.normalised for d in view.docs.values() if d.normalised is not None]
        plan = plan_apply(view, changes, derive(texts, CONFIG))
        self.apply(plan)
        return plan

    def logical(self):
        """Documents and their band entries by id (slots are an implementation detail)."""
        docs = {doc_id: self.docs[slot][1] for doc_id, (slot, _) in self.ids.items()}
        by_slot = {slot: doc_id for doc_id, (slot, _) in self.ids.items()}
        bands = Counter((field, by_slot[slot]) for field, slot in self.bands.elements())
        return docs, bands


def expected_bands(docs: dict[str, str]) -> Counter:
    data = derive(docs.values(), CONFIG)
    return Counter((f, doc_id) for doc_id, text in docs.items() for f in data[text][1])


WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "iota", "kappa", "lambda"]


def text_of(seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(40))


def test_new_documents_get_slots_and_band_entries():
    shard = ModelShard()
    plan = shard.run(
        [IndexChange("a", NewText.of(text_of(1))), IndexChange("b", NewText.of(text_of(2)))]
    )
    assert plan.outcomes == ["indexed", "indexed"]
    assert sorted(s for _, s in plan.deletes) == [] and shard.next_slot == 2 and shard.live == 2
    docs, bands = shard.logical()
    assert docs == {"a": normalise(text_of(1)), "b": normalise(text_of(2))}
    assert bands == expected_bands(docs)


def test_indexing_the_same_text_again_plans_nothing():
    shard = ModelShard()
    shard.run([IndexChange("a", NewText.of(text_of(1)))])
    # When the same id comes with the same text (in another case and spacing)
    again = shard.run([IndexChange("a", NewText.of("  " + text_of(1).upper()))])
    # Then nothing is written
    assert again.outcomes == ["unchanged"]
    assert (again.puts, again.deletes, again.band_adds, again.band_removes) == ([], [], [], [])


def test_a_new_text_replaces_the_old_one_in_place():
    shard = ModelShard()
    shard.run([IndexChange("a", NewText.of(text_of(1)))])
    plan = shard.run([IndexChange("a", NewText.of(text_of(2)))])
    assert plan.outcomes == ["replaced"] and plan.deletes == [] and shard.next_slot == 1
    docs, bands = shard.logical()
    assert docs == {"a": normalise(text_of(2))} and bands == expected_bands(docs)


def test_removal_and_removal_of_an_absent_id():
    shard = ModelShard()
    shard.run([IndexChange("a", NewText.of(text_of(1)))])
    plan = shard.run([RemoveChange("a"), RemoveChange("zzz")])
    assert plan.outcomes == ["removed", "absent"]
    assert shard.logical() == ({}, Counter()) and shard.live == 0


def test_changes_to_one_document_within_one_step_net_out():
    shard = ModelShard()
    shard.run([IndexChange("a", NewText.of(text_of(1)))])
    # replaced and restored: no write at all
    plan = shard.run(
        [IndexChange("a", NewText.of(text_of(2))), IndexChange("a", NewText.of(text_of(1)))]
    )
    assert plan.outcomes == ["replaced", "replaced"] and not (plan.puts or plan.band_adds)
    # added and removed in one step: nothing stored, the slot is spent
    plan = shard.run([IndexChange("b", NewText.of(text_of(3))), RemoveChange("b")])
    assert plan.outcomes == ["indexed", "removed"] and not plan.puts and shard.next_slot == 2
    # removed and indexed again: a new slot, the old one emptied
    plan = shard.run([RemoveChange("a"), IndexChange("a", NewText.of(text_of(1)))])
    assert plan.deletes == [("a", 0)] and [p.slot for p in plan.puts] == [2]
    docs, bands = shard.logical()
    assert docs == {"a": normalise(text_of(1))} and bands == expected_bands(docs)


def test_the_plan_needs_the_stored_text_of_what_it_replaces():
    shard = ModelShard()
    shard.run([IndexChange("a", NewText.of(text_of(1)))])
    change = [IndexChange("a", NewText.of(text_of(2)))]
    view = shard.view(["a"])  # texts not loaded
    assert texts_needed(view, change) == ["a"]
    with pytest.raises(ValueError, match="needs the stored text"):
        plan_apply(view, change, derive([text_of(2)], CONFIG))


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from("abcdef"), st.one_of(st.none(), st.integers(0, 4))),
        min_size=1,
        max_size=30,
    ),
    cuts=st.lists(st.integers(1, 30), max_size=6),
)
def test_any_split_into_steps_gives_the_state_of_the_final_documents(ops, cuts):
    # Given a sequence of index (text seed) / remove (None) changes, cut into steps anywhere
    changes = [
        RemoveChange(d) if seed is None else IndexChange(d, NewText.of(text_of(seed)))
        for d, seed in ops
    ]
    bounds = sorted({c for c in cuts if c < len(changes)} | {0, len(changes)})
    shard = ModelShard()
    for lo, hi in itertools.pairwise(bounds):
        shard.run(changes[lo:hi])
    # Then the shard holds exactly the final documents, each band entry once
    final: dict[str, str] = {}
    for d, seed in ops:
        if seed is None:
            final.pop(d, None)
        else:
            final[d] = normalise(text_of(seed))
    docs, bands = shard.logical()
    assert docs == final
    assert bands == expected_bands(final)
    assert shard.live == len(final)


# --- bounds and matches ---------------------------------------------------------------------


def records_of(texts):
    return np.frombuffer(b"".join(derive(texts, CONFIG)[t][0] for t in texts), dtype=FEATURE_RECORD)


@settings(max_examples=40, deadline=None)
@given(
    base=st.text(alphabet="abcde fghij.", min_size=5, max_size=80),
    edits=st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=80),
        min_size=1,
        max_size=8,
    ),
    threshold=st.sampled_from([0.75, 0.8, 0.9]),
)
def test_bounds_never_rule_out_a_document_that_reaches_the_threshold(base, edits, threshold):
    texts = [normalise(base + e) or "x" for e in edits]
    query = normalise(base) or "x"
    keep = bound_survivors(records_of([query])[0], records_of(texts), threshold)
    for text, kept in zip(texts, keep.tolist(), strict=True):
        if fuzz.ratio(query, text) / 100 >= threshold:
            assert kept


def test_empty_slots_never_survive():
    table = np.zeros(3, dtype=FEATURE_RECORD)
    assert not bound_survivors(records_of(["some text"])[0], table, 0.8).any()


def test_a_saturated_count_is_read_as_unbounded():
    # Given a text with more than 65,535 of one character
    long_text = "a" * 70_000
    record = records_of([long_text])[0]
    assert record["hist"].max() == 0xFFFF
    # Then it still survives against itself (its count is not capped below the truth)
    assert bound_survivors(record, records_of([long_text]), 0.99).all()


def test_verify_returns_exact_scores_best_first_and_honours_the_threshold():
    query = "the quick brown fox jumps over the lazy dog"
    candidates = [
        ("far", "completely different words here"),
        ("b", "the quick brown fox jumps over the lazy cat"),
        ("a", "the quick brown fox jumps over the lazy cat"),
        ("same", query),
    ]
    got = verify(query, candidates, 0.9, "ratio")
    assert [m.id for m in got] == ["same", "a", "b"]
    assert got[1].score == fuzz.ratio(query, candidates[2][1]) / 100
    # a threshold equal to a score keeps it
    assert [m.id for m in verify(query, candidates, got[1].score, "ratio")] == ["same", "a", "b"]


def test_verify_equals_brute_force_for_both_scorers():
    rng = random.Random(3)
    base = [text_of(s) for s in range(30)]
    texts = [normalise(t) for t in base] + [
        normalise(" ".join(w if rng.random() > 0.15 else rng.choice(WORDS) for w in t.split()))
        for t in base
    ]
    found = [(str(i), t) for i, t in enumerate(texts)]
    for algorithm in ("ratio", "token_sort_ratio"):
        for q in texts[:10]:
            scorer = getattr(fuzz, algorithm)
            brute = {i for i, t in found if scorer(q, t) / 100 >= 0.8}
            got = verify(q, found, 0.8, algorithm)
            assert {m.id for m in got} == brute
            assert all(m.score == scorer(q, dict(found)[m.id]) / 100 for m in got)
