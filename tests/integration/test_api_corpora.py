"""The corpus endpoints for real: ``crd serve`` on loopback, a real corpus Redis and a
real worker for the indexing tasks. Answers equal the in-process service's; each
endpoint's errors (401, 404 for another user's corpus, 409, 413, 422, 429 charged by
documents, 503 with the corpus Redis killed); metrics by route template."""

from __future__ import annotations

import pytest

from tests.integration.api_support import api_servers, create_key, poll_job
from tests.services import sample, scrape

pytestmark = pytest.mark.integration

NEAR = "The quick brown fox jumps over the lazy dog. It was a sunny day in the park."
TOPICS = [
    "apples grow on tall trees in the orchard",
    "rivers flow down to the open sea",
    "stars shine brightly at night in winter",
    "cats chase small grey mice at dawn",
    "rain falls softly in the month of april",
    "bread is baked daily by the baker",
]
DOCS = [{"id": f"d{i}", "text": f"{t.capitalize()}. " * 2} for i, t in enumerate(TOPICS)]
DOCS += [{"id": "near-a", "text": NEAR}, {"id": "near/b", "text": NEAR + " Yes."}]


def events(corpus):
    """Every event in the corpus's store, in store order per shard."""
    return [
        stored.message.event(corpus.signing_keys)
        for shard in range(corpus.config.shards)
        for stored in corpus.store.read(corpus.config, shard, "", 10_000)
    ]


@pytest.fixture
def corpus_env(corpus_redis_url: str) -> dict[str, str]:
    """The API's and the worker's CORPUS_REDIS_URL: the corpus Redis this process's
    service sees too (``corpus_redis_url``: empty; a single Redis, or a Redis Cluster)."""
    return {"CORPUS_REDIS_URL": corpus_redis_url}


SINGLE = pytest.mark.parametrize("corpus_redis_url", ["redis"], indirect=True)
"""The error paths run on a single corpus Redis (the happy path runs on a cluster too)."""


def test_a_users_corpus_over_http_answers_as_the_service_does(redis_cluster, corpus_env):
    from redundancy.corpus import get_corpus

    # Given a worker, an API and two users
    redis_cluster.start_worker(1, **corpus_env)
    with api_servers(redis_cluster, **corpus_env) as (api,):
        ana = api.client(create_key(redis_cluster, "ana", redis_cluster.tmp))
        bob = api.client(create_key(redis_cluster, "bob", redis_cluster.tmp))
        # When ana creates a corpus, it is hers: 201, its settings and a Location
        made = ana.post("/v1/corpora", json={"name": "news", "threshold": 0.8, "shards": 2})
        assert made.status_code == 201, made.text
        assert made.headers["Location"] == "/v1/corpora/news"
        assert made.json()["threshold"] == 0.8 and made.json()["shards"] == 2
        assert get_corpus("news").config.owner == "ana"
        # and the name is taken: for her (with its settings) and for bob (without them)
        again = ana.post("/v1/corpora", json={"name": "news"})
        assert again.status_code == 409 and "threshold 0.8" in again.json()["error"]["message"]
        taken = bob.post("/v1/corpora", json={"name": "news"})
        assert taken.status_code == 409 and "taken" in taken.json()["error"]["message"]
        assert "0.8" not in taken.json()["error"]["message"]

        # When she indexes documents and waits, the worker's result comes back inline
        indexed = ana.post(
            "/v1/corpora/news/documents?wait=30",
            json={"items": DOCS},
            headers={"X-Correlation-ID": "corr-index-1"},
        )
        assert indexed.status_code == 200, indexed.text
        job = indexed.json()
        assert (job["kind"], job["state"], job["documents"]) == ("indexing", "succeeded", 8)
        assert job["result"] == {"corpus": "news", "indexed": 8, "replaced": 0, "unchanged": 0,
                                 "removed": 0, "absent": 0}  # fmt: skip
        # and without waiting it is a job (202) like any other, in her job list
        sent = ana.post("/v1/corpora/news/documents", json={"items": [*DOCS[:3], "Plain."]})
        assert sent.status_code == 202 and sent.headers["Location"].startswith("/v1/jobs/")
        done = poll_job(ana, sent.json()["job_id"])
        assert done["state"] == "succeeded"
        assert (done["result"]["unchanged"], done["result"]["indexed"]) == (3, 1)
        assert ana.get("/v1/jobs").json()["jobs"][0] == sent.json()["job_id"]

        # Then queries answer what the service answers in this process, in both modes
        service = get_corpus("news")
        queries = [{"text": NEAR}, {"text": NEAR, "mode": "exact", "threshold": 0.9},
                   {"text": TOPICS[2], "limit": 1}]  # fmt: skip
        for q in queries:
            answer = ana.post("/v1/corpora/news/query", json=q)
            assert answer.status_code == 200, answer.text
            expected = service.find_similar(
                q["text"], q.get("threshold"), q.get("limit", 20), q.get("mode", "indexed")
            )
            assert answer.json() == expected.model_dump(mode="json")
        assert [m["id"] for m in ana.post("/v1/corpora/news/query", json=queries[0]).json()[
            "matches"]] == ["near-a", "near/b"]  # fmt: skip
        # and a check rejects a near duplicate (indexing nothing), then indexes a new text
        check = {"id": "near-c", "text": NEAR + " No.", "policy": "reject"}
        rejected = ana.post(
            "/v1/corpora/news/check", json=check, headers={"X-Correlation-ID": "corr-check-1"}
        )
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["action"] == "rejected"
        assert {m["id"] for m in rejected.json()["matches"]} == {"near-a", "near/b"}
        fresh = ana.post("/v1/corpora/news/check", json={"id": "new", "text": "Entirely new."})
        assert fresh.json() == {"corpus": "news", "id": "new", "action": "indexed",
                                "matches": []}  # fmt: skip

        # and the store's events carry each request's correlation id (through the task)
        by_doc = {(e.event_type, e.payload.doc_id): e.correlation_id for e in events(service)}
        assert {by_doc["document.indexed", d["id"]] for d in DOCS} == {"corr-index-1"}
        assert by_doc["duplicate.detected", "near-c"] == "corr-check-1"
        assert ("document.indexed", "near-c") not in by_doc  # rejected: never indexed
        # and a browser session of hers reaches the corpus as her key does
        browser = api.client()
        login = browser.post("/v1/sessions", json={"api_key": ana.headers["Authorization"][7:]})
        assert login.status_code == 201
        by_cookie = browser.post("/v1/corpora/news/query", json={"text": NEAR})
        assert by_cookie.json() == service.find_similar(NEAR).model_dump(mode="json")

        # and the stats are the service's; the list holds her corpus, not bob's view of it
        stats = ana.get("/v1/corpora/news").json()
        assert stats["documents"] == 10 == service.stats()["documents"]
        assert stats["events"] == service.stats()["events"] and stats["lagging_shards"] == []
        assert [c["name"] for c in ana.get("/v1/corpora").json()["corpora"]] == ["news"]
        assert bob.get("/v1/corpora").json() == {"corpora": []}

        # and bob reaches none of it: every route answers 404, as for an unknown corpus
        for method, path, body in [
            ("GET", "/v1/corpora/news", None),
            ("POST", "/v1/corpora/news/query", {"text": NEAR}),
            ("POST", "/v1/corpora/news/check", {"text": NEAR}),
            ("POST", "/v1/corpora/news/documents", {"items": ["Mine now."]}),
            ("DELETE", "/v1/corpora/news/documents/near-a", None),
            ("DELETE", "/v1/corpora/news", None),
        ]:
            refused = bob.request(method, path, json=body)
            assert refused.status_code == 404, (method, path, refused.text)
            assert refused.json()["error"]["message"] == "no corpus 'news' of yours"
        assert service.stats()["documents"] == 10

        # When she removes one document (its id has a slash), then another by a job
        one = ana.delete("/v1/corpora/news/documents/near%2Fb")
        assert one.status_code == 200 and one.json()["removed"] == 1, one.text
        assert ana.delete("/v1/corpora/news/documents/near%2Fb").json()["absent"] == 1
        many = ana.request(
            "DELETE", "/v1/corpora/news/documents?wait=30", json={"ids": ["d0", "d1", "zz"]}
        )
        assert many.status_code == 200 and many.json()["kind"] == "removal", many.text
        assert (many.json()["result"]["removed"], many.json()["result"]["absent"]) == (2, 1)
        matches = ana.post("/v1/corpora/news/query", json={"text": NEAR}).json()["matches"]
        assert [m["id"] for m in matches] == ["near-a"]

        # Then the metrics count each request under its route template
        samples = scrape(f"{api.base}/metrics")
        assert sample(samples, "http_requests_total", method="POST", status_code="200",
                      endpoint="/v1/corpora/{name}/query") == 6  # fmt: skip
        assert sample(samples, "http_requests_total", method="GET", status_code="404",
                      endpoint="/v1/corpora/{name}") == 1  # fmt: skip
        assert sample(samples, "http_requests_total", method="DELETE", status_code="200",
                      endpoint="/v1/corpora/{name}/documents/{doc_id}") == 2  # fmt: skip

        # When she drops it, it is gone: 204, then 404
        assert ana.delete("/v1/corpora/news").status_code == 204
        assert ana.get("/v1/corpora/news").status_code == 404
        assert ana.get("/v1/corpora").json() == {"corpora": []}


@SINGLE
def test_corpus_errors_401_404_413_422_and_429_charged_by_documents(redis_cluster, corpus_env):
    # Given an API with 6 documents a day per key, 3 per indexing request, small bodies
    settings = {"API_QUOTA_DOCUMENTS": "6", "API_MAX_CORPUS_DOCUMENTS": "3",
                "API_MAX_JSON_BYTES": "4096", **corpus_env}  # fmt: skip
    with api_servers(redis_cluster, **settings) as (api,):
        ana = api.client(create_key(redis_cluster, "ana", redis_cluster.tmp))
        assert ana.post("/v1/corpora", json={"name": "min", "threshold": 0.8}).status_code == 201
        # Then: no key is 401, on every corpus route
        anonymous = api.client()
        assert anonymous.get("/v1/corpora").status_code == 401
        assert anonymous.post("/v1/corpora", json={"name": "x"}).status_code == 401
        assert anonymous.post("/v1/corpora/min/query", json={"text": NEAR}).status_code == 401
        # an unknown corpus is 404, and so is one made by crd corpus without --owner
        assert ana.post("/v1/corpora/nope/query", json={"text": NEAR}).status_code == 404
        local = {**corpus_env, "CELERY_BROKER_URL": "", "CELERY_RESULT_BACKEND": ""}
        for name, owner in [("ops", ()), ("given", ("--owner", "ana"))]:
            made = redis_cluster.crd("corpus", "create", name, *owner, **local)
            assert made.returncode == 0, made.stderr
        assert ana.get("/v1/corpora/ops").status_code == 404
        assert ana.get("/v1/corpora/given").json()["documents"] == 0
        assert [c["name"] for c in ana.get("/v1/corpora").json()["corpora"]] == ["given", "min"]
        # an invalid name, scorer or threshold is 422 with the reason
        for body, words in [
            ({"name": "Bad Name"}, "invalid corpus name"),
            ({"name": "ok", "algorithm": "nope"}, "nope"),
            ({"name": "ok", "threshold": 1.5}, "between"),
            ({"name": "ok", "extra": 1}, "extra"),
        ]:
            bad = ana.post("/v1/corpora", json=body)
            assert bad.status_code == 422 and words in bad.json()["error"]["message"], bad.text
        # a threshold below the corpus's minimum, an empty text, an unknown mode: 422
        low = ana.post("/v1/corpora/min/query", json={"text": NEAR, "threshold": 0.5})
        assert low.status_code == 422 and "outside [0.8, 1.0]" in low.json()["error"]["message"]
        empty = ana.post("/v1/corpora/min/query", json={"text": "   "})
        assert empty.status_code == 422 and "empty" in empty.json()["error"]["message"].lower()
        mode = ana.post("/v1/corpora/min/query", json={"text": NEAR, "mode": "fast"})
        assert mode.status_code == 422 and "unknown mode" in mode.json()["error"]["message"]
        policy = ana.post("/v1/corpora/min/check", json={"text": NEAR, "policy": "maybe"})
        assert policy.status_code == 422 and "unknown policy" in policy.json()["error"]["message"]
        # one empty item refuses the whole indexing request, and nothing is sent
        items = ana.post("/v1/corpora/min/documents", json={"items": ["Fine.", " "]})
        assert items.status_code == 422 and "item 1" in items.json()["error"]["message"]
        # too many documents, or too many bytes: 413 with the limit
        many = ana.post("/v1/corpora/min/documents", json={"items": ["a.", "b.", "c.", "d."]})
        assert many.status_code == 413 and "at most 3" in many.json()["error"]["message"]
        big = ana.post("/v1/corpora/min/query", json={"text": "y" * 5000})
        assert big.status_code == 413 and "4,096 bytes" in big.json()["error"]["message"]
        # none of the refused requests charged the quota: 6 documents pass (3 + 3 queries)
        assert ana.post("/v1/corpora/min/documents", json={"items": DOCS[:3]}).status_code == 202
        for _ in range(3):
            assert ana.post("/v1/corpora/min/query", json={"text": NEAR}).status_code == 200
        # then the quota, charged by documents, refuses both kinds until midnight UTC
        over = ana.post("/v1/corpora/min/documents", json={"items": ["One more."]})
        assert over.status_code == 429 and "daily quota" in over.json()["error"]["message"]
        assert int(over.headers["Retry-After"]) > 0
        assert ana.post("/v1/corpora/min/query", json={"text": NEAR}).status_code == 429


def test_the_corpus_redis_down_is_a_503_that_says_so(redis_cluster, private_redis):
    # Given an API whose corpora live on a private Redis, and a corpus there
    env = {"CORPUS_REDIS_URL": private_redis.url}
    with api_servers(redis_cluster, **env) as (api,):
        ana = api.client(create_key(redis_cluster, "ana", redis_cluster.tmp))
        assert ana.post("/v1/corpora", json={"name": "kept"}).status_code == 201
        # When that Redis is killed
        private_redis.stop()
        # Then every corpus call answers 503 with what failed (auth, on REDIS_URL, works)
        for answer in (
            ana.post("/v1/corpora/kept/query", json={"text": NEAR}),
            ana.get("/v1/corpora"),
            ana.post("/v1/corpora", json={"name": "other"}),
        ):
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["type"] == "CorpusStoreUnavailableError"
            assert "corpus store" in error["message"] and "did not answer" in error["message"]
            assert answer.headers["Retry-After"] == "1"
        # When it is back (empty: it kept nothing), the API answers again
        private_redis.start()
        assert ana.get("/v1/corpora").json() == {"corpora": []}


@SINGLE
def test_a_queued_indexing_job_never_writes_into_a_corpus_that_changed_hands(
    redis_cluster, corpus_env
):
    from redundancy.corpus import get_corpus

    # Given no worker: ana's indexing job waits in the corpus queue
    with api_servers(redis_cluster, **corpus_env) as (api,):
        ana = api.client(create_key(redis_cluster, "ana", redis_cluster.tmp))
        bob = api.client(create_key(redis_cluster, "bob", redis_cluster.tmp))
        assert ana.post("/v1/corpora", json={"name": "news"}).status_code == 201
        job = ana.post("/v1/corpora/news/documents", json={"items": DOCS}).json()["job_id"]
        # When she drops the corpus and bob makes one of that name before the job runs
        assert ana.delete("/v1/corpora/news").status_code == 204
        assert bob.post("/v1/corpora", json={"name": "news"}).status_code == 201
        redis_cluster.start_worker(1, **corpus_env)
        # Then her job fails as for an unknown corpus, naming no other corpus
        failed = poll_job(ana, job)
        assert failed["state"] == "failed", failed
        assert failed["error"] == {"type": "UnknownCorpusError",
                                   "message": "no corpus 'news' of 'ana'"}  # fmt: skip
        # and bob's corpus holds nothing of hers
        assert get_corpus("news").stats()["documents"] == 0
        assert bob.get("/v1/corpora/news").json()["events"] == 0
