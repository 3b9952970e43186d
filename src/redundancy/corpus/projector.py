"""The corpus projector: an event handler that keeps every corpus index up to its store.

A corpus command projects its own events (``redundancy.corpus.service``), but a writer
that dies between the store's append and the projection (the Kafka store produces
first) leaves its shard behind. Every stored change also goes on the event bus; on each
one this handler catches that shard up (``Corpus.catch_up``: from the index's recorded
position, each event applied once, so running it for an index already up to date, or
twice, changes nothing).
"""

from __future__ import annotations

import logging

from redundancy.core.corpus import shard_of
from redundancy.corpus.service import UnknownCorpusError, get_corpus
from redundancy.events.handlers import handler
from redundancy.events.models import (
    DOCUMENT_INDEXED,
    DOCUMENT_REMOVED,
    DUPLICATE_DETECTED,
    DomainEvent,
)

log = logging.getLogger(__name__)

NAME = "corpus-projector"


@handler(DOCUMENT_INDEXED, DOCUMENT_REMOVED, DUPLICATE_DETECTED, name=NAME)
def project(event: DomainEvent) -> None:
    """Catch up the shard of the event's document (a dropped corpus: nothing to do)."""
    name, doc_id = event.payload.corpus, event.payload.doc_id
    try:
        corpus = get_corpus(name)
    except UnknownCorpusError:
        log.info("corpus %r is gone: event %s needs no projection", name, event.event_id)
        return
    corpus.catch_up(shard_of(doc_id, corpus.config.shards))
