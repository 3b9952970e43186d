"""Staging a batch on the real Redis job store.

``RedisJobStore`` writes documents in chunks of ``STAGE_PIPELINE`` while it reads the
stream, so a duplicate id found late leaves documents in Redis that ``stage_batch`` must
remove (the in-memory twin reads everything first and never gets that far).
"""

from __future__ import annotations

import uuid

import pytest
import redis

from redundancy import keys, resources
from redundancy.config import get_settings
from redundancy.errors import InvalidInputError
from redundancy.tasks import stage_batch
from redundancy.workers.jobstore import STAGE_PIPELINE, RedisJobStore, get_job_store
from tests.services import REDIS_BACKEND_DB, flush_db, redis_url

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_job_store(redis_server, monkeypatch):
    """This process's settings pointed at the test Redis (so ``get_job_store()`` is the
    Redis job store there); a plain client on the same database is returned."""
    url = redis_url(REDIS_BACKEND_DB)
    flush_db(url)
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    monkeypatch.setenv("CELERY_RESULT_BACKEND", url)
    get_settings.cache_clear()
    resources.forget("job_store")  # the next get_job_store() follows the settings
    yield redis.Redis.from_url(url)
    monkeypatch.undo()
    get_settings.cache_clear()
    resources.forget("job_store")


def test_a_duplicate_id_after_the_first_chunk_drops_what_was_already_staged(redis_job_store):
    # Given a stream whose duplicate id comes after more than one chunk of documents
    assert isinstance(get_job_store(), RedisJobStore)
    batch_id = f"dup-{uuid.uuid4().hex}"
    docs = keys.batch_docs(batch_id)
    handed_out = 0
    staged_when_duplicate_came: list[int] = []

    def items():
        nonlocal handed_out
        for n in range(STAGE_PIPELINE + 100):
            handed_out += 1
            yield {"id": f"d{n}", "text": f"Document number {n}."}
        staged_when_duplicate_came.append(redis_job_store.hlen(docs))
        handed_out += 1
        yield {"id": "d7", "text": "the id of an earlier document"}
        handed_out += 1
        yield {"id": "never", "text": "not read"}

    # When it is staged
    with pytest.raises(InvalidInputError, match="duplicate item id 'd7'"):
        stage_batch(items(), batch_id=batch_id)
    # Then the first chunk really was in Redis when the duplicate came ...
    assert staged_when_duplicate_came == [STAGE_PIPELINE]
    assert handed_out == STAGE_PIPELINE + 101  # ... the stream was read up to the duplicate
    # ... and the batch's documents are gone
    assert redis_job_store.exists(docs) == 0


def test_a_good_stream_is_staged_in_chunks_with_a_ttl(redis_job_store):
    # the positive case of the test above: every document lands, with the batch TTL
    batch_id = f"ok-{uuid.uuid4().hex}"
    count = STAGE_PIPELINE * 2 + 3
    staged = stage_batch(
        ({"id": f"d{n}", "text": f"Document number {n}."} for n in range(count)),
        batch_id=batch_id,
    )
    docs = keys.batch_docs(batch_id)
    assert staged.count == count
    assert redis_job_store.hlen(docs) == count
    assert 0 < redis_job_store.ttl(docs) <= get_settings().batch_ttl
    assert get_job_store().load(batch_id, [0, count - 1]) == [
        ("d0", "Document number 0."),
        (f"d{count - 1}", f"Document number {count - 1}."),
    ]
