"""The HTTP gateway for real: ``crd serve`` (uvicorn) on loopback, real Redis, a real
worker. Each endpoint's happy path and errors, SSE, the rate limit across two API
processes, revocation, correlation id into the worker's log and the event, metrics with
several uvicorn workers, one trace from the HTTP request to the task."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import redis

from tests.integration.api_support import api_servers, create_key, poll_job, sse_events
from tests.services import REDIS_CACHE_DB, redis_url, sample, scrape

pytestmark = pytest.mark.integration

NEAR = "The quick brown fox jumps over the lazy dog. It was a sunny day in the park."


def test_analyses_and_comparisons_answer_inline_or_by_polling(redis_cluster):
    # Given a worker, an API server and a user's key
    redis_cluster.start_worker(1)
    with api_servers(redis_cluster) as (api,):
        key = create_key(redis_cluster, "ana", redis_cluster.tmp)
        client = api.client(key)
        # When a small analysis asks to wait
        inline = client.post("/v1/analyses?wait=30", json={"text": "The cat sat. The cat sat."})
        # Then the result comes back inline
        assert inline.status_code == 200, inline.text
        assert inline.json()["state"] == "succeeded"
        assert inline.json()["result"]["redundancy_score"] == 0.5
        # When a comparison is sent without waiting, it is accepted and found by polling
        sent = client.post(
            "/v1/comparisons", json={"text_a": "hello world", "text_b": "Hello, World!"}
        )
        assert sent.status_code == 202 and sent.headers["Location"].startswith("/v1/jobs/")
        done = poll_job(client, sent.json()["job_id"])
        assert done["state"] == "succeeded" and done["result"]["is_similar"] is True
        # An invalid text fails in the worker and reads as a failed job with the reason
        failed = poll_job(
            client, client.post("/v1/analyses", json={"text": "   "}).json()["job_id"]
        )
        assert failed["state"] == "failed" and failed["error"]["type"] == "EmptyTextError"
        # A finished job cannot be revoked
        gone = client.delete(f"/v1/jobs/{sent.json()['job_id']}")
        assert gone.status_code == 409
        # Every job is in the user's list, newest first
        assert client.get("/v1/jobs").json()["jobs"][0] == failed["job_id"]


def test_a_batch_streams_progress_then_completion_and_pages_its_results(redis_cluster):
    # Given a worker with small chunks (several sub-tasks) and an API
    redis_cluster.start_worker(2, BATCH_CHUNK_SIZE="3")
    with api_servers(redis_cluster, BATCH_CHUNK_SIZE="3") as (api,):
        key = create_key(redis_cluster, "ana", redis_cluster.tmp)
        client = api.client(key)
        topics = ["apples grow on trees", "rivers flow to the sea", "stars shine at night",
                  "cats chase small mice", "rain falls in april", "bread is baked daily",
                  "trains run on rails", "bees make sweet honey"]  # fmt: skip
        docs = [{"id": f"d{i}", "text": f"{t.capitalize()}." * 2} for i, t in enumerate(topics)]
        docs += [{"id": "near-a", "text": NEAR}, {"id": "near-b", "text": NEAR + " Yes."}]
        body = "".join(json.dumps(d) + "\n" for d in docs)
        # When it is sent as JSONL and its events are streamed
        sent = client.post(
            "/v1/batches?threshold=0.8&mode=exact",
            content=body.encode(),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert sent.status_code == 202, sent.text
        job = sent.json()
        assert job["documents"] == 10 and job["links"]["page"] == f"/batches/{job['job_id']}"
        events = sse_events(client, job["links"]["events"])
        # Then progress comes first, never goes back, and completion ends the stream
        kinds = [k for k, _ in events]
        assert kinds[-1] == "completed" and set(kinds[:-1]) == {"progress"}
        done = [d["done"] for k, d in events if k == "progress" and d["done"] is not None]
        assert done == sorted(done) and done[-1] == events[0][1]["total"]
        summary = events[-1][1]["summary"]
        assert summary["document_count"] == 10 and summary["pairs"] == 1
        # and the status pages through the items
        first = client.get(f"/v1/jobs/{job['job_id']}?limit=4").json()
        assert first["progress"] == {
            "done": first["progress"]["total"],
            "total": events[0][1]["total"],
        }
        result = first["result"]
        assert [i["id"] for i in result["items"]] == ["d0", "d1", "d2", "d3"]
        assert result["page"]["items_total"] == 10 and result["pairs"][0]["id_b"] == "near-b"
        following = client.get(result["page"]["next"]).json()["result"]
        assert [i["id"] for i in following["items"]] == ["d4", "d5", "d6", "d7"]
        # and a browser that logs in sees the results page with both near duplicates
        browser = api.client()
        assert browser.post("/v1/sessions", json={"api_key": key}).status_code == 201
        page = browser.get(job["links"]["page"])
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "near-a" in page.text and "near-b" in page.text
        assert "sunny day in the park" in page.text  # the kept texts reached the page


def test_errors_over_real_http_401_404_422_413_and_429_with_retry_after(redis_cluster):
    # Given an API with one request per 10 s per key, 3 documents a day and small bodies
    settings = {
        "API_RATE_LIMIT": "0.1",
        "API_RATE_BURST": "1",
        "API_QUOTA_DOCUMENTS": "3",
        "API_MAX_JSON_BYTES": "4096",
        "API_MAX_BATCH_DOCUMENTS": "2",
    }
    with api_servers(redis_cluster, **settings) as (api,):
        ana, bob, cid, eve = (create_key(redis_cluster, u, redis_cluster.tmp) for u in "abce")
        # Then: no key is 401; invalid input 422 with the field named; a body over the
        # limit 413 (declared length, and chunked without one); too many documents 413
        assert api.client().get("/v1/jobs").status_code == 401
        invalid = api.client(ana).post("/v1/analyses", json={"text": "x", "threshold": 2})
        assert invalid.status_code == 422 and "threshold" in invalid.json()["error"]["message"]
        big = api.client(bob).post("/v1/analyses", json={"text": "y" * 5000})
        assert big.status_code == 413 and "4,096 bytes" in big.json()["error"]["message"]
        chunked = api.client(bob).post(
            "/v1/analyses",
            content=iter([b'{"text": "', b"z" * 5000, b'"}']),
            headers={"Content-Type": "application/json"},
        )
        assert chunked.status_code == 413
        many = api.client(cid).post("/v1/batches", json={"items": ["a.", "b.", "c."]})
        assert many.status_code == 413 and "at most 2 documents" in many.json()["error"]["message"]
        # the rate limit (refused bodies were never admitted, so charged nothing): bob's
        # first request passes, the next waits for his 10 s slot
        assert api.client(bob).get("/v1/jobs").status_code == 200
        limited = api.client(bob).get("/v1/jobs")
        assert limited.status_code == 429 and limited.headers["Retry-After"] in {"9", "10"}
        assert limited.headers["RateLimit-Remaining"] == "0"
        # another user's job is 404; the daily quota refuses a batch past it until midnight
        mine = api.client(ana).post("/v1/batches", json={"items": ["d.", "e."]})
        assert mine.status_code == 202
        theirs = api.client(eve).get(f"/v1/jobs/{mine.json()['job_id']}")
        assert theirs.status_code == 404
    with api_servers(redis_cluster, API_QUOTA_DOCUMENTS="3") as (api,):
        client = api.client(create_key(redis_cluster, "dee", redis_cluster.tmp))
        assert client.post("/v1/batches", json={"items": ["f.", "g."]}).status_code == 202
        over = client.post("/v1/batches", json={"items": ["h.", "i."]})
        now = time.gmtime()
        to_midnight = 86_400 - (now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec)
        assert over.status_code == 429 and abs(int(over.headers["Retry-After"]) - to_midnight) <= 5


def test_a_revoked_key_is_refused_by_the_next_request_on_every_instance(redis_cluster):
    with api_servers(redis_cluster, count=2) as servers:
        key = create_key(redis_cluster, "ana", redis_cluster.tmp)
        assert all(s.client(key).get("/v1/jobs").status_code == 200 for s in servers)
        out = redis_cluster.crd("keys", "revoke", "ana", REDIS_URL=redis_url(REDIS_CACHE_DB))
        assert out.returncode == 0 and "revoked 1 keys" in out.stdout
        assert [s.client(key).get("/v1/jobs").status_code for s in servers] == [401, 401]
        listed = redis_cluster.crd("keys", "list", "ana", REDIS_URL=redis_url(REDIS_CACHE_DB))
        (info,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert info["revoked_at"] is not None and key not in listed.stdout  # never shown again
        assert key.startswith(f"crd_{info['key_id']}_")


def test_a_queued_job_can_be_revoked(redis_cluster):
    # Given no worker: the job waits in its queue
    with api_servers(redis_cluster) as (api,):
        client = api.client(create_key(redis_cluster, "ana", redis_cluster.tmp))
        job = client.post("/v1/analyses", json={"text": "Never analysed."}).json()["job_id"]
        # When it is revoked, then its state says so; another user cannot revoke it
        other = api.client(create_key(redis_cluster, "bob", redis_cluster.tmp))
        assert other.delete(f"/v1/jobs/{job}").status_code == 404
        revoked = client.delete(f"/v1/jobs/{job}")
        assert revoked.status_code == 202 and revoked.json()["state"] == "revoked"
        assert client.get(f"/v1/jobs/{job}").json()["state"] == "revoked"


EDGE = 0.5
"""Seconds a request may wait for its answer at the edge of the measured window."""


def _hammer(base: str, key: str, stop: threading.Event, tally: dict[object, float]) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        client.get("/healthz")  # connected before the window opens
        tally["first"] = time.monotonic()
        while not stop.is_set():
            status = client.get("/v1/jobs").status_code
            tally[status] = tally.get(status, 0) + 1
        tally["last"] = time.monotonic()


def test_a_rate_limit_of_n_per_second_holds_exactly_across_two_api_processes(redis_cluster):
    # Given two API processes sharing one limit: 20 requests/s with a burst of 5
    rate, burst = 20, 5
    limits = {"API_RATE_LIMIT": str(rate), "API_RATE_BURST": str(burst), "LOG_FORMAT": "text"}
    with api_servers(redis_cluster, count=2, **limits) as servers:
        key = create_key(redis_cluster, "ana", redis_cluster.tmp)
        # When 8 clients (4 per process) send requests as fast as they can for 3 s
        stop, tallies = threading.Event(), [{} for _ in range(8)]
        threads = [
            threading.Thread(target=_hammer, args=(servers[i % 2].base, key, stop, tallies[i]))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        time.sleep(3)  # the length of the measured window, not a synchronisation
        stop.set()
        for t in threads:
            t.join(30)
    window = max(t["last"] for t in tallies) - min(t["first"] for t in tallies)
    accepted = sum(t.get(200, 0) for t in tallies)
    refused = sum(t.get(429, 0) for t in tallies)
    # Then at most burst + rate x window got through, give or take the request in flight
    # at each edge (two independent limits would let twice that through), and at least
    # rate x window less the first request's latency (EDGE: a loaded machine takes up to
    # that long to answer; a limit charged twice would let only half through)
    assert {k for t in tallies for k in t} <= {200, 429, "first", "last"} and refused > accepted
    assert rate * (window - EDGE) - 2 <= accepted <= burst + rate * window + 1, (accepted, window)


def test_correlation_id_reaches_the_worker_log_and_the_event_in_one_trace(
    redis_cluster, otlp_receiver
):
    # Given a JSON-logging worker and an API, both tracing to one OTLP receiver
    tracing = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
               "OTEL_BSP_SCHEDULE_DELAY": "200", "SERVICE_NAME": "crd-api-test"}  # fmt: skip
    worker = redis_cluster.start_worker(1, ("--log-format=json",), **tracing)
    with api_servers(redis_cluster, **tracing) as (api,):
        client = api.client(create_key(redis_cluster, "ana", redis_cluster.tmp))
        # When a request carries a correlation id
        sent = client.post(
            "/v1/analyses?wait=30",
            json={"text": "Trace me. Trace me."},
            headers={"X-Correlation-ID": "corr-http-42"},
        )
        assert sent.status_code == 200 and sent.headers["X-Correlation-ID"] == "corr-http-42"
        job_id = sent.json()["job_id"]
        # Then the HTTP server span is the parent of the task's publish, whose run follows
        server = otlp_receiver.wait_for(lambda s: s.name == "POST /v1/analyses" and s.kind == 2)[0]
        publish = otlp_receiver.wait_for(
            lambda s: (
                s.name == "apply_async/redundancy.analyze_content" and s.trace_id == server.trace_id
            )
        )[0]
        run = otlp_receiver.wait_for(
            lambda s: s.name == "run/redundancy.analyze_content" and s.trace_id == server.trace_id
        )[0]
        assert publish.parent_id == server.span_id and run.parent_id == publish.span_id
        # and the API's access log line carries the id
        access = [r for r in api.lines() if r.get("logger") == "redundancy.api.access"]
        assert any(r["correlation_id"] == "corr-http-42" and r["http_status"] == 200
                   for r in access)  # fmt: skip
    # and the worker's log line for the task and the domain event carry it too
    worker.stop()
    lines = [json.loads(line) for line in worker.text().splitlines()]
    ran = [r for r in lines if r.get("task_id") == job_id]
    assert ran and {r["correlation_id"] for r in ran} == {"corr-http-42"}
    event = next(e for e in _events(redis_cluster.backend_url) if e.task_id == job_id)
    assert (event.correlation_id, event.trace_id) == ("corr-http-42", server.trace_id)


def _events(*urls: str):
    from redundancy import keys
    from redundancy.config import Settings
    from redundancy.events import parse_event
    from redundancy.events.wire import WireMessage

    streams = [keys.outbox(), keys.event_stream(Settings().events_topic)]
    return [
        parse_event(WireMessage.from_fields(fields).body)
        for url in urls
        for stream in streams
        for _, fields in redis.Redis.from_url(url).xrange(stream)
    ]


def test_metrics_count_every_request_across_several_uvicorn_workers(redis_cluster):
    # Given one API server with 2 worker processes
    with api_servers(redis_cluster, workers=2) as (api,):
        client = api.client(create_key(redis_cluster, "ana", redis_cluster.tmp))
        # When requests are made on fresh connections until both workers answered some
        sent, deadline = 0, time.monotonic() + 60
        while len(_serving(api)) < 2 and time.monotonic() < deadline:
            with api.client() as fresh:
                fresh.get(f"/v1/jobs/{sent:032x}", headers=client.headers)
            sent += 1
        assert len(_serving(api)) == 2
        for _ in range(10):
            with api.client() as fresh:
                fresh.get("/healthz")
        # Then every scrape, whichever worker answers it, counts all of them
        template = {"method": "GET", "endpoint": "/v1/jobs/{job_id}", "status_code": "404"}
        for _ in range(4):
            samples = scrape(f"{api.base}/metrics")
            assert sample(samples, "http_requests_total", **template) == sent
            assert sample(samples, "http_requests_total", endpoint="/healthz") >= 10
            assert sample(samples, "http_request_duration_seconds_count",
                          endpoint="/v1/jobs/{job_id}") == sent  # fmt: skip


def _serving(api) -> set[str]:
    """The processes that logged an answer to /v1/jobs/{job_id}."""
    return {
        r["process"]
        for r in api.lines()
        if r.get("logger") == "redundancy.api.access"
        and r.get("http_endpoint") == "/v1/jobs/{job_id}"
    }
