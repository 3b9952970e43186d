"""Corpora on a real Redis and on a real 3-master Redis Cluster (every test runs on both).

The oracle is brute force: every indexed text scored against the query with rapidfuzz.
``assert_consistent`` checks the index against the store it projects: the documents the
store's events leave behind, each with its feature record and every band entry once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from benchmarks.corpora import synthetic_corpus
from rapidfuzz import fuzz, process

from redundancy.config import get_settings
from redundancy.core.corpus import FEATURE_RECORD, derive, shard_of
from redundancy.core.text import hash_normalised, normalise
from redundancy.corpus import create_corpus, get_corpus
from redundancy.corpus.service import Corpus, UnknownCorpusError
from redundancy.errors import EmptyTextError, InvalidInputError
from tests.services import ROOT, is_service_setting

pytestmark = pytest.mark.integration

DOCS = synthetic_corpus(1200, seed=14, copy_share=0.15, edit_share=0.05)
ITEMS = [{"id": i, "text": t} for i, t in zip(DOCS.ids, DOCS.texts, strict=True)]


def brute_force(
    corpus: Corpus, docs: dict[str, str], text: str, threshold: float
) -> dict[str, float]:
    """Every document scoring >= threshold, by rapidfuzz over all normalised texts."""
    ids = list(docs)
    scorer = getattr(fuzz, corpus.config.algorithm)
    scores = process.cdist(
        [normalise(text)], [docs[i] for i in ids], scorer=scorer, processor=None, dtype=np.float64
    )[0]
    return {i: s / 100 for i, s in zip(ids, scores.tolist(), strict=True) if s / 100 >= threshold}


def answers(corpus: Corpus, queries: list[str], mode: str) -> list[list[tuple[str, float]]]:
    return [
        [(m.id, m.score) for m in corpus.find_similar(q, limit=10_000, mode=mode).matches]
        for q in queries
    ]


def stored_documents(corpus: Corpus) -> dict[str, str]:
    """id -> normalised text of what the store's events leave (replayed)."""
    return {d["id"]: normalise(d["text"]) for d in corpus.export()}


def assert_consistent(corpus: Corpus) -> dict[str, str]:
    """The index is exactly the projection of the store (module docstring); returns it."""
    expected_docs = stored_documents(corpus)
    seen: dict[str, str] = {}
    for shard in range(corpus.config.shards):
        snap = corpus.index.snapshot(shard)
        by_slot = {slot: doc_id for slot, (doc_id, _) in snap["docs"].items()}
        assert {doc_id: int(v.split(":")[0]) for doc_id, v in snap["ids"].items()} == {
            doc_id: slot for slot, doc_id in by_slot.items()
        }
        data = derive([text for _, text in snap["docs"].values()], corpus.config)
        expected_bands: dict[int, list[int]] = {}
        for slot, (doc_id, text) in snap["docs"].items():
            assert shard_of(doc_id, corpus.config.shards) == shard
            assert snap["ids"][doc_id].split(":")[1] == hash_normalised(text)[:16]
            record, fields = data[text]
            assert snap["features"][slot].tobytes() == record
            for field in fields:
                expected_bands.setdefault(field, []).append(slot)
            seen[doc_id] = text
        empty = set(range(len(snap["features"]))) - set(snap["docs"])
        assert all(snap["features"][s].tobytes() == bytes(FEATURE_RECORD.itemsize) for s in empty)
        got = {f: Counter(s) for f, s in snap["bands"].items()}
        assert got == {f: Counter(s) for f, s in expected_bands.items()}, "band entries differ"
        assert snap["stats"].documents == len(snap["docs"])
        assert snap["stats"].band_entries == sum(len(s) for s in expected_bands.values())
    assert seen == expected_docs
    return seen


@pytest.fixture
def indexed(corpus_redis_url: str) -> Corpus:
    corpus = create_corpus("news", threshold=0.8, shards=4)
    for start in range(0, len(ITEMS), 400):
        corpus.index_documents(ITEMS[start : start + 400])
    return corpus


def test_exact_mode_equals_brute_force_and_indexed_mode_is_precise_with_high_recall(indexed):
    # Given 1,200 documents (15% of them edited copies) indexed in a corpus
    docs = assert_consistent(indexed)
    assert len(docs) == len(set(DOCS.ids))
    queries = DOCS.texts[::6] + [t.upper() + " and a tail" for t in DOCS.texts[1:60:6]]
    pairs = found = 0
    for query in queries:
        truth = brute_force(indexed, docs, query, 0.8)
        # When the corpus is asked in exact mode
        exact = indexed.find_similar(query, limit=10_000, mode="exact")
        # Then it returns exactly brute force's documents and scores, best first
        assert {m.id: m.score for m in exact.matches} == truth
        assert [m.score for m in exact.matches] == sorted(truth.values(), reverse=True)
        # and indexed mode returns only true matches with their exact scores
        fast = indexed.find_similar(query, limit=10_000)
        assert all(truth.get(m.id) == m.score for m in fast.matches)
        pairs += len(truth)
        found += len(fast.matches)
    # and finds nearly all of them (the near-duplicates injected in the corpus)
    assert pairs > 250
    assert found / pairs >= 0.99
    # and a higher threshold narrows both modes alike
    strict = indexed.find_similar(DOCS.texts[0], threshold=0.97, limit=10_000, mode="exact")
    assert all(m.score >= 0.97 for m in strict.matches)


def test_indexing_again_is_idempotent_and_appends_nothing(indexed):
    # Given an indexed corpus and its store
    before = assert_consistent(indexed)
    events = indexed.stats()["events"]
    # When the same documents are indexed again (texts re-cased and re-spaced too)
    again = indexed.index_documents(ITEMS[:300])
    recased = indexed.index_documents(
        [{"id": ITEMS[0]["id"], "text": "  " + DOCS.texts[0].upper()}]
    )
    # Then nothing changes: no event, the same index
    assert again.unchanged == 300 and again.indexed == again.replaced == 0
    assert recased.unchanged == 1
    assert indexed.stats()["events"] == events
    assert assert_consistent(indexed) == before


def test_replace_and_remove_are_visible_to_the_next_query(indexed):
    # Given a document and a near-duplicate query of it
    target = DOCS.ids[10]
    query = DOCS.texts[10]
    assert target in {m.id for m in indexed.find_similar(query).matches}
    # When its text is replaced by an unrelated one
    summary = indexed.index_documents([{"id": target, "text": "Something else entirely. " * 20}])
    # Then the next query no longer finds it under its old text, but under the new one
    assert summary.replaced == 1
    assert target not in {m.id for m in indexed.find_similar(query, mode="exact").matches}
    assert indexed.find_similar("something else entirely. " * 20).matches[0].id == target
    # When it is removed
    removed = indexed.remove_documents([target, "never-indexed"])
    # Then no mode finds it, and the index is still the projection of its store
    assert (removed.removed, removed.absent) == (1, 1)
    hits = indexed.find_similar("Something else entirely. " * 20, mode="exact").matches
    assert target not in {m.id for m in hits}
    docs = assert_consistent(indexed)
    assert target not in docs and len(docs) == len(ITEMS) - 1


def test_rebuild_from_the_store_gives_identical_answers(indexed):
    # Given a corpus with replaced and removed documents, and its answers
    indexed.index_documents([{"id": DOCS.ids[5], "text": DOCS.texts[7]}])
    indexed.remove_documents(DOCS.ids[20:40])
    queries = DOCS.texts[:200:5]
    before = {mode: answers(indexed, queries, mode) for mode in ("indexed", "exact")}
    stats = indexed.stats()
    # When the index is rebuilt from the event store
    indexed.rebuild()
    # Then every shard runs a new generation, and every answer is the same
    after = indexed.stats()
    assert all(int(s["generation"]) == 1 for s in after["per_shard"])
    assert after["documents"] == stats["documents"] and after["events"] == stats["events"]
    assert {mode: answers(indexed, queries, mode) for mode in ("indexed", "exact")} == before
    assert_consistent(indexed)
    # and the old generation's keys are gone
    client = indexed.redis.client
    assert not any(client.exists(indexed.index.prefix(s) + "g0:meta") for s in range(4))


def test_bad_input_gets_a_clear_error_and_changes_nothing(indexed):
    before = assert_consistent(indexed)
    events = indexed.stats()["events"]
    # empty text, inside an otherwise good batch: the whole command is refused
    with pytest.raises(InvalidInputError, match=r"item 1: .*empty"):
        indexed.index_documents(
            [{"id": "ok", "text": "Fine text here."}, {"id": "x", "text": "  "}]
        )
    with pytest.raises(InvalidInputError, match="repeats id 'a' with another text"):
        indexed.index_documents([{"id": "a", "text": "one"}, {"id": "a", "text": "two"}])
    with pytest.raises(EmptyTextError):
        indexed.find_similar("   ")
    # a threshold below the corpus minimum
    with pytest.raises(InvalidInputError, match=r"outside \[0.8, 1.0\]"):
        indexed.find_similar(DOCS.texts[0], threshold=0.5)
    with pytest.raises(InvalidInputError, match="unknown mode"):
        indexed.find_similar(DOCS.texts[0], mode="fast")
    # an unknown corpus
    with pytest.raises(UnknownCorpusError, match=r"unknown corpus 'nope' \(corpora: news\)"):
        get_corpus("nope")
    with pytest.raises(InvalidInputError, match="invalid corpus name"):
        get_corpus("Bad{Name}")
    # Then nothing was appended or indexed
    assert indexed.stats()["events"] == events
    assert assert_consistent(indexed) == before


def test_check_and_index_reports_earlier_near_duplicates_and_applies_the_policy(indexed):
    events = indexed.stats()["events"]
    copy = DOCS.texts[3] + " A closing remark."
    # When a near-duplicate is checked with the reject policy
    rejected = indexed.check_and_index({"id": "new-1", "text": copy}, "reject")
    # Then its matches come back, it is not indexed, and the store records the detection
    assert rejected.action == "rejected" and rejected.matches[0].id == DOCS.ids[3]
    assert "new-1" not in {d["id"] for d in indexed.export()}
    assert indexed.stats()["events"] == events + 1
    # When it is checked with the default policy, it is indexed and still reported
    kept = indexed.check_and_index({"id": "new-1", "text": copy})
    assert kept.action == "indexed" and kept.matches == rejected.matches
    # and checking it again excludes itself from its own matches
    again = indexed.check_and_index({"id": "new-1", "text": copy})
    assert again.action == "unchanged" and "new-1" not in {m.id for m in again.matches}
    # and an original text is indexed with no matches and no detection event
    fresh = indexed.check_and_index({"id": "new-2", "text": "Wholly original words. " * 30})
    assert (fresh.action, fresh.matches) == ("indexed", [])
    assert_consistent(indexed)


def test_a_projector_killed_mid_replay_resumes_and_applies_nothing_twice(indexed, corpus_redis_url):
    # Given a corpus whose rebuild replays 1,200 events 20 at a time
    queries = DOCS.texts[:120:4]
    before = answers(indexed, queries, "exact")
    env = {k: v for k, v in os.environ.items() if not is_service_setting(k)}
    env.update(CORPUS_REDIS_URL=corpus_redis_url, CORPUS_APPLY_BATCH="20", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "redundancy", "corpus", "rebuild", "news"]
    proc = subprocess.Popen(
        [*command, "--processes", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the pool processes die with it
    )
    client = indexed.redis.client
    building = [indexed.index.prefix(s) + "g1:meta" for s in range(4)]
    deadline = time.monotonic() + 120
    # When the projector (two processes) is killed with SIGKILL once it applied part of it
    while True:
        applied = sum(int(client.hget(k, "live") or 0) for k in building)
        if applied >= 150 or proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert 0 < applied < len(ITEMS), f"not killed mid-replay ({applied} applied)"
    assert any(indexed.index.is_building(s, "1") for s in range(4))
    # Then running the rebuild again resumes from the recorded positions
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # and the index holds every document once, with every band entry once
    docs = assert_consistent(get_corpus("news"))
    assert len(docs) == len(ITEMS)
    assert answers(get_corpus("news"), queries, "exact") == before


def test_a_large_call_is_applied_in_steps_of_the_apply_batch(corpus_redis_url, monkeypatch):
    # Given a projector step of 25 events and one call with 300 documents (75 a shard)
    monkeypatch.setenv("CORPUS_APPLY_BATCH", "25")
    get_settings.cache_clear()
    corpus = create_corpus("steps", threshold=0.8, shards=4)
    assert corpus.apply_batch == 25
    # When they are indexed in one call
    summary = corpus.index_documents(ITEMS[:300])
    # Then every document is indexed once, and the index is the store's projection
    assert summary.indexed == 300 and corpus.stats()["events"] == 300
    assert len(assert_consistent(corpus)) == 300


def test_more_bands_at_creation_take_two_hashing_rounds(corpus_redis_url):
    # Given a corpus created with 102 bands (two one-permutation rounds of 51)
    corpus = create_corpus("wide", threshold=0.8, shards=2, bands=102)
    assert (corpus.config.params.bands, corpus.config.params.lsh.rounds) == (102, 2)
    # When documents are indexed, then each has 102 band fields, and queries verify
    corpus.index_documents(ITEMS[:200])
    docs = assert_consistent(corpus)
    assert corpus.stats()["band_entries"] <= 102 * len(docs)
    for text in DOCS.texts[:200:20]:
        truth = brute_force(corpus, docs, text, 0.8)
        assert {m.id: m.score for m in corpus.find_similar(text, limit=1000).matches} == truth


def test_store_entries_that_are_not_ours_are_skipped_not_applied_and_stop_nothing(
    corpus_redis_url,
):
    from redundancy import keys
    from redundancy.core.corpus import NewText
    from redundancy.events.wire import WireMessage

    # Given a corpus whose events are signed with the configured key
    corpus = create_corpus("signed", threshold=0.8, shards=2)
    corpus.signing_keys = (b"k" * 32,)
    corpus.index_documents(ITEMS[:100])
    evil, *rest = ITEMS[100:]
    shard = shard_of(evil["id"], 2)
    later = next(item for item in rest if shard_of(item["id"], 2) == shard)
    # When someone with write access to the store appends an entry that is not an event
    # and a document.indexed event signed with another key
    forged = corpus._indexed_event(evil["id"], evil["text"], NewText.of(evil["text"]), None)
    stream = keys.corpus_events("signed", shard)
    corpus.redis.client.xadd(stream, {"junk": "1"})
    corpus.redis.client.xadd(stream, WireMessage.of(forged, (b"x" * 32,)).fields())
    # Then the next command on that shard goes past both and applies its own change
    assert corpus.index_documents([later]).indexed == 1
    # and neither entry changed the index: the forged document is not there
    assert corpus.stats()["documents"] == 101
    assert evil["id"] not in assert_consistent(corpus)
    # and a rebuild from the store (those entries included) gives the same answers
    queries = [item["text"] for item in ITEMS[:100:10]] + [evil["text"], later["text"]]
    before = answers(corpus, queries, "exact")
    assert later["id"] in {i for i, _ in before[-1]} and evil["id"] not in {
        i for i, _ in before[-2]
    }
    corpus.rebuild()
    assert answers(corpus, queries, "exact") == before
