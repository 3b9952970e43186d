"""The HTTP gateway in-process, on the embedded default: auth, limits, validation, size
limits, sessions, metrics and the batch intake. (Real uvicorn, Redis and workers:
tests/integration/test_api.py.)"""

from __future__ import annotations

import asyncio
import json
import sys
import types
from datetime import UTC, datetime

import httpx

from redundancy import keys

BASE = "http://api.test"


def make_app(monkeypatch, **env: str):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from redundancy.config import get_settings

    get_settings.cache_clear()
    from redundancy.api import create_api

    return create_api()


def call(app, *requests, base: str = BASE, session: str | None = None, ip: str = "203.0.113.9"):
    """Run requests ``(method, url, kwargs)`` in order on one client at ``ip`` (with the
    session cookie ``session``, if given); their responses."""

    async def scenario():
        transport = httpx.ASGITransport(app=app, client=(ip, 40000))
        cookies = {"crd_session": session} if session else None
        async with httpx.AsyncClient(transport=transport, base_url=base, cookies=cookies) as client:
            return [await client.request(m, u, **kw) for m, u, kw in requests]

    return asyncio.run(scenario())


def new_key(user: str = "ana") -> str:
    from redundancy.api import apikeys
    from redundancy.api.store import run_blocking

    return run_blocking(apikeys.create(user, "test"))[0]


def bearer(key: str) -> dict[str, dict[str, str]]:
    return {"headers": {"Authorization": f"Bearer {key}"}}


def analysis(key: str, text: str = "The cat sat. The cat sat.", **extra):
    return ("POST", "/v1/analyses", {"json": {"text": text, **extra}, **bearer(key)})


def test_requests_without_a_valid_key_are_refused_with_401(monkeypatch):
    # Given the app and one user's key
    app = make_app(monkeypatch)
    key = new_key()
    # When requests come without a key, with a made-up key and with a malformed one
    none, unknown, malformed = call(
        app,
        ("POST", "/v1/analyses", {"json": {"text": "x"}}),
        analysis("crd_0123456789ab_" + "A" * 43),
        analysis("not-a-key"),
    )
    # Then each is 401 with a message saying what to send, and nothing ran
    assert [r.status_code for r in (none, unknown, malformed)] == [401, 401, 401]
    assert "Authorization: Bearer" in none.json()["error"]["message"]
    assert unknown.json()["error"]["message"] == "unknown or revoked API key"
    # and the real key works
    (ok,) = call(app, analysis(key))
    assert ok.status_code == 202


def test_an_accepted_analysis_answers_202_with_location_correlation_and_rate_headers(
    monkeypatch,
):
    # Given a key with a burst of 5
    app = make_app(monkeypatch, API_RATE_BURST="5", API_RATE_LIMIT="1")
    key = new_key()
    # When an analysis is posted with a correlation id
    request = analysis(key)
    request[2]["headers"]["X-Correlation-ID"] = "corr-http-1"
    (r,) = call(app, request)
    # Then it is accepted with the job's location, the id echoed and the key's budget
    assert r.status_code == 202
    body = r.json()
    assert r.headers["Location"] == f"/v1/jobs/{body['job_id']}" == body["links"]["status"]
    assert (body["kind"], body["state"], body["documents"]) == ("analysis", "queued", 1)
    assert r.headers["X-Correlation-ID"] == "corr-http-1"
    assert r.headers["RateLimit-Limit"] == "5" and r.headers["RateLimit-Remaining"] == "4"
    assert r.headers["RateLimit-Policy"] == "5;w=5"
    # and a malformed correlation id is replaced by a new one
    bad = analysis(key)
    bad[2]["headers"]["X-Correlation-ID"] = "has spaces\tand tabs"
    (r2,) = call(app, bad)
    assert r2.headers["X-Correlation-ID"] != "has spaces\tand tabs"
    assert len(r2.headers["X-Correlation-ID"]) == 32


def test_invalid_input_is_a_422_with_one_readable_message(monkeypatch):
    app = make_app(monkeypatch)
    key = new_key()
    # When the threshold is out of range, the algorithm unknown, and a field is missing
    bad_threshold, bad_algorithm, missing = call(
        app,
        analysis(key, threshold=5),
        analysis(key, algorithm="ratoi"),
        ("POST", "/v1/comparisons", {"json": {"text_a": "x"}, **bearer(key)}),
    )
    # Then each is 422 naming the field and the problem
    assert [r.status_code for r in (bad_threshold, bad_algorithm, missing)] == [422] * 3
    assert (
        "threshold: Input should be less than or equal to 1"
        in (bad_threshold.json()["error"]["message"])
    )
    assert "did you mean" in bad_algorithm.json()["error"]["message"].lower()
    assert "text_b: Field required" in missing.json()["error"]["message"]
    assert missing.json()["detail"][0]["loc"] == ["body", "text_b"]


def test_another_users_job_answers_404_like_an_unknown_one(monkeypatch):
    app = make_app(monkeypatch)
    ana, bob = new_key("ana"), new_key("bob")
    (submitted,) = call(app, analysis(ana))
    job = submitted.json()["job_id"]
    theirs, unknown, own_list, other_list = call(
        app,
        ("GET", f"/v1/jobs/{job}", bearer(bob)),
        ("GET", "/v1/jobs/" + "f" * 32, bearer(bob)),
        ("GET", "/v1/jobs", bearer(ana)),
        ("GET", "/v1/jobs", bearer(bob)),
    )
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["type"] == "NotFoundError"
    assert own_list.json() == {"jobs": [job]} and other_list.json() == {"jobs": []}


def test_bodies_over_the_limits_are_refused_with_413(monkeypatch):
    app = make_app(
        monkeypatch,
        API_MAX_JSON_BYTES="2048",
        API_MAX_BODY_BYTES="4096",
        API_MAX_BATCH_DOCUMENTS="3",
    )
    key = new_key()
    jsonl = {"Content-Type": "application/x-ndjson", **bearer(key)["headers"]}
    lines = "".join(json.dumps({"id": i, "text": f"doc {i}"}) + "\n" for i in range(4))

    def chunked(data: bytes):  # no Content-Length: the limit must hold while streaming
        async def gen():
            for i in range(0, len(data), 500):
                yield data[i : i + 500]

        return gen()

    big_json, big_stream, too_many, too_many_jsonl = call(
        app,
        analysis(key, text="a" * 3000),
        (
            "POST",
            "/v1/batches",
            {"content": chunked(b'"' + b"x" * 6000 + b'"\n'), "headers": jsonl},
        ),
        ("POST", "/v1/batches", {"json": {"items": ["a", "b", "c", "d"]}, **bearer(key)}),
        ("POST", "/v1/batches", {"content": lines.encode(), "headers": jsonl}),
    )
    assert big_json.status_code == 413
    assert "limit of 2,048 bytes" in big_json.json()["error"]["message"]
    assert big_stream.status_code == 413
    assert "limit of 4,096 bytes" in big_stream.json()["error"]["message"]
    for r in (too_many, too_many_jsonl):
        assert r.status_code == 413
        assert "at most 3 documents (API_MAX_BATCH_DOCUMENTS)" in r.json()["error"]["message"]


def test_over_the_rate_limit_answers_429_with_the_right_retry_after(monkeypatch):
    # Given one request per 10 s and no burst above it
    app = make_app(monkeypatch, API_RATE_LIMIT="0.1", API_RATE_BURST="1")
    key, other = new_key("ana"), new_key("bob")
    # When the key sends two requests at once
    first, second, someone_else = call(app, analysis(key), analysis(key), analysis(other))
    # Then the second waits for the first one's 10 s slot, and other keys are unaffected
    assert first.status_code == 202 and someone_else.status_code == 202
    assert second.status_code == 429
    assert second.headers["Retry-After"] in {"9", "10"}
    assert second.headers["RateLimit-Remaining"] == "0"
    assert "0.1 requests/s" in second.json()["error"]["message"]


def test_the_daily_document_quota_refuses_whole_requests_until_midnight(monkeypatch):
    app = make_app(monkeypatch, API_QUOTA_DOCUMENTS="3")
    key = new_key()
    batch = ("POST", "/v1/batches", {"json": {"items": ["one.", "two."]}, **bearer(key)})
    first, second = call(app, batch, batch)
    assert first.status_code == 202
    assert second.status_code == 429
    now = datetime.now(UTC)
    to_midnight = 86_400 - (now.hour * 3600 + now.minute * 60 + now.second)
    assert abs(int(second.headers["Retry-After"]) - to_midnight) <= 5
    assert "daily quota of 3 documents" in second.json()["error"]["message"]
    # a refused request charged nothing: one more document still fits
    (third,) = call(app, ("POST", "/v1/batches", {"json": {"items": ["three."]}, **bearer(key)}))
    assert third.status_code == 202


def test_a_revoked_key_is_refused_on_the_next_request(monkeypatch):
    from redundancy.api import apikeys
    from redundancy.api.store import run_blocking

    app = make_app(monkeypatch)
    key = new_key("ana")
    keep = new_key("ana")
    (before,) = call(app, analysis(key))
    key_id = key.split("_")[1]
    assert run_blocking(apikeys.revoke("ana", key_id)) == [key_id]
    after, kept = call(app, analysis(key), analysis(keep))
    assert (before.status_code, after.status_code, kept.status_code) == (202, 401, 202)
    listed = {i.key_id: i for i in run_blocking(apikeys.list_keys("ana"))}
    assert listed[key_id].revoked_at is not None
    assert listed[keep.split("_")[1]].revoked_at is None


def test_a_session_cookie_authenticates_and_ends_with_its_key(monkeypatch):
    # Given a key exchanged for a session over plain HTTP and over HTTPS
    app = make_app(monkeypatch)
    key = new_key("ana")
    plain, tls = (
        call(app, ("POST", "/v1/sessions", bearer(key)))[0],
        call(app, ("POST", "/v1/sessions", bearer(key)), base="https://api.test")[0],
    )
    # Then the cookie is HttpOnly and SameSite=Strict, and Secure only over TLS
    assert plain.status_code == tls.status_code == 201
    cookie = plain.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie and "Secure" in tls.headers["set-cookie"]
    assert plain.json()["user_id"] == "ana"
    session_id = plain.cookies["crd_session"]
    # When a job is sent with the cookie alone
    sent, me = call(
        app,
        ("POST", "/v1/analyses", {"json": {"text": "From the browser."}}),
        ("GET", "/v1/sessions/current", {}),
        session=session_id,
    )
    # Then it is the user's job, also recorded in the session
    assert sent.status_code == 202 and me.json()["key_id"] == key.split("_")[1]
    from redundancy.sessions import get_session_manager

    jobs = get_session_manager().sync.list_jobs(session_id, ip_address="203.0.113.9")
    assert jobs == [sent.json()["job_id"]]
    # and once the key is revoked the session no longer authenticates
    from redundancy.api import apikeys
    from redundancy.api.store import run_blocking

    run_blocking(apikeys.revoke("ana"))
    (refused,) = call(app, ("GET", "/v1/jobs", {}), session=session_id)
    assert refused.status_code == 401


def test_an_ip_bound_session_serves_only_its_ip(monkeypatch):
    # Given sessions bound to the IP that logged in
    app = make_app(monkeypatch, SESSION_BIND_IP="true")
    (login,) = call(app, ("POST", "/v1/sessions", bearer(new_key())))
    assert login.json()["bound_ip"] is True
    session = login.cookies["crd_session"]
    text = {"json": {"text": "Bound."}}
    # When the same cookie comes from the creator's IP and from another one
    (here,) = call(app, ("POST", "/v1/analyses", text), session=session)
    (elsewhere,) = call(app, ("POST", "/v1/analyses", text), session=session, ip="198.51.100.1")
    # Then only the creator's IP is served, and its job is in the session's list
    assert here.status_code == 202 and elsewhere.status_code == 401
    from redundancy.sessions import get_session_manager

    listed = get_session_manager().sync.list_jobs(session, ip_address="203.0.113.9")
    assert listed == [here.json()["job_id"]]


def test_logout_ends_the_session(monkeypatch):
    app = make_app(monkeypatch)
    key = new_key()
    (login,) = call(app, ("POST", "/v1/sessions", {"json": {"api_key": key}}))
    out, after = call(
        app,
        ("DELETE", "/v1/sessions/current", {}),
        ("GET", "/v1/jobs", {}),
        session=login.cookies["crd_session"],
    )
    assert out.status_code == 204 and after.status_code == 401


def test_the_login_form_redirects_back_to_the_page_only_on_this_site(monkeypatch):
    app = make_app(monkeypatch)
    key = new_key()
    form = {"api_key": key, "next": "/batches/abc"}
    elsewhere = {"api_key": key, "next": "//evil.example/x"}
    ok, evil, wrong = call(
        app,
        ("POST", "/v1/sessions", {"data": form}),
        ("POST", "/v1/sessions", {"data": elsewhere}),
        ("POST", "/v1/sessions", {"data": {"api_key": "nope", "next": "/"}}),
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/batches/abc"
    assert evil.headers["location"] == "/"
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text


def test_metrics_count_requests_by_route_template(monkeypatch):
    from prometheus_client import REGISTRY

    def count(endpoint: str, status: str) -> float:
        labels = {"method": "GET", "endpoint": endpoint, "status_code": status}
        return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0

    app = make_app(monkeypatch)
    key = new_key()
    template = "/v1/jobs/{job_id}"
    before = count(template, "404"), count("unmatched", "404")
    call(app, *[("GET", f"/v1/jobs/{i:032x}", bearer(key)) for i in range(3)])
    call(app, ("GET", "/no/such/path", {}))
    after = count(template, "404"), count("unmatched", "404")
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)
    (scrape,) = call(app, ("GET", "/metrics", {}))
    assert f'endpoint="{template}"' in scrape.text
    assert "http_request_duration_seconds_bucket" in scrape.text
    assert "/v1/jobs/00000000" not in scrape.text  # never the raw path


def test_jsonl_is_staged_as_a_stream_and_a_bad_line_leaves_nothing(monkeypatch):
    from redundancy.api import limits
    from redundancy.api.store import run_blocking

    app = make_app(monkeypatch)
    key = new_key()
    headers = {"Content-Type": "application/x-ndjson", **bearer(key)["headers"]}
    good = b'{"id": "a", "text": "Same text here."}\n"plain string line"\n\n{"text": "x y"}\n'
    bad = b'{"id": "a", "text": "fine"}\n{"id": "b", "text": 42}\n'
    ok, refused = call(
        app,
        ("POST", "/v1/batches?threshold=0.9&mode=exact", {"content": good, "headers": headers}),
        ("POST", "/v1/batches", {"content": bad, "headers": headers}),
    )
    assert ok.status_code == 202 and ok.json()["documents"] == 3
    assert refused.status_code == 422
    assert "JSONL line 2" in refused.json()["error"]["message"]
    # the refused request's documents were refunded: today's use is the first batch's
    key_id = key.split("_")[1]
    used = run_blocking(limits.charge(key_id, 0, 0, max_documents=10, max_bytes=10))
    assert used.documents == 3
    # and its staged documents are gone (the good batch ran eagerly and was merged)
    from redundancy.batch.store import get_job_store

    assert get_job_store()._docs == {}  # type: ignore[attr-defined]


def test_multipart_upload_is_one_document_per_file(monkeypatch):
    app = make_app(monkeypatch)
    key = new_key()
    files = [
        ("files", ("a.txt", b"First file. First file.", "text/plain")),
        ("files", ("b.txt", b"\xff\xfe not utf-8", "application/octet-stream")),
    ]
    (r,) = call(
        app, ("POST", "/v1/batches", {"files": files, "data": {"mode": "exact"}, **bearer(key)})
    )
    assert r.status_code == 202 and r.json()["documents"] == 2
    (unsupported,) = call(
        app,
        ("POST", "/v1/batches", {"content": b"x", "headers": {"Content-Type": "text/csv",
                                                              **bearer(key)["headers"]}}),
    )  # fmt: skip
    assert unsupported.status_code == 415


def test_one_admission_checks_key_rate_and_quota_and_charges_only_when_all_hold(monkeypatch):
    from redundancy.api import apikeys, limits
    from redundancy.api.store import run_blocking

    make_app(monkeypatch)
    key = new_key("ana")
    key_id = apikeys.key_id_of(key)
    ref = keys.api_key(apikeys.digest(key))

    def admit(documents: int = 0, key_ref: str = ref, key_id: str = key_id):
        flow = limits.admit(
            key_id, key_ref=key_ref, by_digest=True, rate=2.0, burst=3,
            documents=documents, size=10 * documents, max_documents=5, max_bytes=1000,
        )  # fmt: skip
        return run_blocking(flow)

    # Given a key allowed 2 requests/s with a burst of 3 and 5 documents a day
    # When a request asks for more documents than the quota allows
    over = admit(documents=6)
    # Then it is refused for the quota, and neither its rate nor its documents were charged
    assert (over.status, over.quota.exceeded, over.user_id) == (-2, "documents", "ana")
    # When 5 requests of one document come at once: the burst of 3 passes, then the rate
    results = [admit(documents=1) for _ in range(5)]
    assert [r.status for r in results] == [1, 1, 1, 0, 0]
    assert [r.rate.remaining for r in results[:3]] == [2, 1, 0]
    assert results[3].rate.retry_after == 1  # 0.5 s to the next slot, rounded up
    assert [r.quota.documents for r in results] == [1, 2, 3, 3, 3]  # refused: not charged
    assert results[0].rate.headers()["RateLimit-Policy"] == "3;w=2"
    # A key id that does not match the digest's (a guessed id) is unknown, charging nothing
    forged = admit(key_id="0" * 12)
    assert forged.status == -1
    assert admit(key_ref=keys.api_key("0" * 64)).status == -1


def test_openapi_is_generated_from_the_tasks_and_core_models(monkeypatch):
    app = make_app(monkeypatch)
    (r,) = call(app, ("GET", "/openapi.json", {}))
    schemas = r.json()["components"]["schemas"]
    from redundancy.core.models import AnalysisResult
    from redundancy.schemas import AnalyzeRequest

    assert set(AnalysisResult.model_fields) <= set(schemas["AnalysisResult"]["properties"])
    assert set(AnalyzeRequest.model_fields) <= set(schemas["AnalyzeRequest"]["properties"])
    assert schemas["BatchRequest"]["properties"]["items"]
    batches = r.json()["paths"]["/v1/batches"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-ndjson", "multipart/form-data"} <= set(batches)
    # the corpus routes answer with the corpus service's own models
    from redundancy.corpus import CheckResult, IndexSummary, SimilarResult

    paths = r.json()["paths"]
    for path, method, model in [
        ("/v1/corpora/{name}/query", "post", SimilarResult),
        ("/v1/corpora/{name}/check", "post", CheckResult),
        ("/v1/corpora/{name}/documents/{doc_id}", "delete", IndexSummary),
    ]:
        answer = paths[path][method]["responses"]["200"]["content"]["application/json"]
        assert answer["schema"]["$ref"] == f"#/components/schemas/{model.__name__}"
        assert set(model.model_fields) <= set(schemas[model.__name__]["properties"])
    assert schemas["QueryRequest"]["properties"]["mode"]["enum"] == ["indexed", "exact"]
    assert "IndexSummary" in str(schemas["JobStatus"]["properties"]["result"])
    (docs,) = call(app, ("GET", "/docs", {}))
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_the_results_page_renders_the_callers_finished_batch_with_kept_texts(monkeypatch):
    # Given a finished batch of ana's (its result and kept texts in place) ...
    from redundancy.api import apikeys, jobs
    from redundancy.api.store import run_blocking
    from redundancy.batch.store import get_job_store

    app = make_app(monkeypatch)
    key = new_key("ana")
    run_blocking(
        jobs.record("b1", "ana", apikeys.key_id_of(key), "batch", tasks=3, documents=2, ttl=60)
    )
    result = {"batch_id": "b1", "pairs": [{"id_a": "x", "id_b": "y"}], "clusters": [["x", "y"]]}
    monkeypatch.setattr(jobs, "snapshot", lambda job: jobs.Snapshot("succeeded", result, done=3))
    texts = {"x": "A <b>text</b>.", "y": "A text!"}
    get_job_store().put_blobs(
        {keys.batch_texts("b1"): {i: json.dumps({"id": i, "text": t}).encode()
                                  for i, t in texts.items()}}, 60
    )  # fmt: skip
    # ... and a page renderer that shows what it was given
    seen = {}

    def render(batch, texts=None, *, title=None):
        seen.update(batch=batch, texts=texts, title=title)
        return "<html>rendered</html>"

    monkeypatch.setitem(sys.modules, "redundancy.report", types.SimpleNamespace(
        render_batch_report=render))  # fmt: skip
    # When the logged-in browser opens it, without a session, and as another user
    (login,) = call(app, ("POST", "/v1/sessions", bearer(key)))
    (page,) = call(app, ("GET", "/batches/b1", {}), session=login.cookies["crd_session"])
    anonymous, other = call(
        app,
        ("GET", "/batches/b1", {"follow_redirects": False}),
        ("GET", "/batches/b1", bearer(new_key("bob"))),
    )
    # Then the page is the renderer's, fed the batch and the kept texts, under a strict CSP
    assert page.status_code == 200 and page.text == "<html>rendered</html>"
    assert seen == {"batch": result, "texts": texts, "title": "Batch b1"}
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login?next=/batches/b1"
    assert other.status_code == 404


def test_health_and_readiness(monkeypatch):
    app = make_app(monkeypatch)
    health, ready = call(app, ("GET", "/healthz", {}), ("GET", "/readyz", {}))
    assert health.json() == {"status": "ok", "checks": {}}
    assert ready.status_code == 200 and ready.json()["checks"]["api_store"] == "ok"


def test_crd_serve_and_crd_keys_refuse_without_a_broker_or_redis(monkeypatch):
    from click.testing import CliRunner

    from redundancy.cli import cli

    runner = CliRunner()
    # Given no broker: the API has no workers to send jobs to
    no_broker = runner.invoke(cli, ["serve"])
    assert no_broker.exit_code == 2 and "CELERY_BROKER_URL is not set" in no_broker.output
    # Given a broker but no REDIS_URL: keys, sessions and limits have nowhere shared to live
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    from redundancy.config import get_settings

    get_settings.cache_clear()
    no_redis = runner.invoke(cli, ["serve"])
    assert no_redis.exit_code == 2 and "REDIS_URL is not set" in no_redis.output
    keys_without = runner.invoke(cli, ["keys", "create", "ana"])
    assert keys_without.exit_code == 2 and "REDIS_URL is not set" in keys_without.output


def test_a_broker_that_refuses_the_job_is_a_503_and_costs_nothing(monkeypatch):
    from kombu.exceptions import OperationalError

    from redundancy.api import limits
    from redundancy.api.store import run_blocking
    from redundancy.tasks import analyze_content

    # Given a broker that refuses every publish
    app = make_app(monkeypatch)
    key = new_key()

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(analyze_content, "apply_async", refuse)
    # When an analysis is posted
    refused, listed = call(app, analysis(key), ("GET", "/v1/jobs", bearer(key)))
    # Then it is 503 (retry later), no job is left recorded and the quota is refunded
    assert refused.status_code == 503
    assert "broker did not take the job" in refused.json()["error"]["message"]
    assert listed.json() == {"jobs": []}
    key_id = key.split("_")[1]
    used = run_blocking(limits.charge(key_id, 0, 0, max_documents=10, max_bytes=10))
    assert (used.documents, used.bytes) == (0, 0)
