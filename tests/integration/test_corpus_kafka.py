"""The Kafka event store (EVENT_STORE=kafka) on a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import uuid

import pytest
from benchmarks.corpora import synthetic_corpus

from redundancy.config import get_settings
from redundancy.core.corpus import NewText, shard_of
from redundancy.corpus import create_corpus
from redundancy.corpus.store import KafkaStore, close_stores
from redundancy.events.models import CorpusDocumentPayload, DocumentRemovedEvent
from tests.integration.test_corpus import answers, assert_consistent

pytestmark = pytest.mark.integration

DOCS = synthetic_corpus(400, seed=7, copy_share=0.2)
ITEMS = [{"id": i, "text": t} for i, t in zip(DOCS.ids, DOCS.texts, strict=True)]


@pytest.fixture
def kafka_store(kafka_server, corpus_redis_url, monkeypatch):
    monkeypatch.setenv("EVENT_STORE", "kafka")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_server)
    monkeypatch.setenv("CORPUS_KAFKA_TOPIC_PREFIX", f"test-{uuid.uuid4().hex[:8]}.")
    get_settings.cache_clear()
    yield kafka_server
    close_stores()  # its clients would retry the session's broker after it stops
    get_settings.cache_clear()


@pytest.mark.parametrize("corpus_redis_url", ["redis"], indirect=True)
def test_the_kafka_store_round_trips_and_a_rebuild_from_it_answers_the_same(kafka_store):
    # Given a corpus whose event store is a Kafka topic, one partition per shard
    corpus = create_corpus("kafka", threshold=0.8, shards=3)
    assert isinstance(corpus.store, KafkaStore)
    # When documents are indexed (in two chunks), one replaced, two removed
    for start in (0, 200):
        assert corpus.index_documents(ITEMS[start : start + 200]).indexed == 200
    assert corpus.index_documents(ITEMS[:50]).unchanged == 50  # appends nothing
    assert corpus.index_documents([{"id": DOCS.ids[1], "text": DOCS.texts[2]}]).replaced == 1
    assert corpus.remove_documents(DOCS.ids[10:12]).removed == 2
    # Then the topic holds exactly those events, and the index is their projection
    stats = corpus.stats()
    assert stats["events"] == 400 + 1 + 2 and stats["lagging_shards"] == []
    docs = assert_consistent(corpus)  # replays the topic to compare
    assert len(docs) == 398
    queries = DOCS.texts[:120:3]
    before = {mode: answers(corpus, queries, mode) for mode in ("indexed", "exact")}
    assert sum(len(a) for a in before["exact"]) > len(queries)  # near-duplicates found
    # When the index is rebuilt from the topic
    corpus.rebuild()
    # Then every answer is the same
    assert {mode: answers(corpus, queries, mode) for mode in ("indexed", "exact")} == before
    assert all(s["generation"] == "1" for s in corpus.stats()["per_shard"])
    assert assert_consistent(corpus) == docs


@pytest.mark.parametrize("corpus_redis_url", ["redis"], indirect=True)
def test_events_in_the_topic_that_the_index_missed_are_caught_up(kafka_store):
    # Given events produced to the topic that no command projected (a crash in between)
    corpus = create_corpus("gap", threshold=0.8, shards=2)
    corpus.index_documents(ITEMS[:20])
    for item in ITEMS[20:30]:
        event = corpus._indexed_event(item["id"], item["text"], NewText.of(item["text"]), None)
        corpus.store.append(corpus.config, shard_of(item["id"], 2), [corpus._wire(event)])
    first = ITEMS[0]["id"]
    removal = DocumentRemovedEvent(
        aggregate_id=f"gap/{first}", payload=CorpusDocumentPayload(corpus="gap", doc_id=first)
    )
    corpus.store.append(corpus.config, shard_of(first, 2), [corpus._wire(removal)])
    assert corpus.stats()["lagging_shards"] == [0, 1]
    # When the next command reaches those shards, indexing the removed document again
    summary = corpus.index_documents(ITEMS[:1] + ITEMS[30:60])
    # Then the missed events were applied first, in store order, and the document the
    # index still held when the command decided is indexed again (not "unchanged")
    assert corpus.stats()["lagging_shards"] == []
    assert summary.indexed == 31
    docs = assert_consistent(corpus)
    assert len(docs) == 60 and first in docs
