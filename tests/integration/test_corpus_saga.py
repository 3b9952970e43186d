"""``crd batch --corpus NAME [--add]`` on real workers: matches against the corpus's
earlier documents, and the batch added all or nothing (a saga), with faults really
injected in a worker (``tests.integration.saga_faults``) and a worker SIGKILLed mid-step."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from benchmarks.corpora import synthetic_corpus

from redundancy import keys
from redundancy.core.scorers import get_scorer, is_similar
from redundancy.core.text import normalise
from redundancy.corpus import create_corpus, get_corpus
from redundancy.corpus.saga import list_sagas
from tests.integration.test_corpus import assert_consistent

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS = synthetic_corpus(150, seed=7, copy_share=0.3, edit_share=0.03, length=(300, 600))
EARLIER = [{"id": f"c{n:03d}", "text": t} for n, t in enumerate(DOCS.texts[:40])]
BATCH = [{"id": f"b{n:03d}", "text": t} for n, t in enumerate(DOCS.texts[40:130])]
for n, old in zip((5, 25, 45, 65, 85), (1, 5, 9, 13, 17), strict=True):
    BATCH[n] = {**BATCH[n], "id": f"c{old:03d}"}  # replaces an earlier document
CHUNK = 10
"""90 documents in chunks of 10: a saga of 9 steps."""
PROBES = [d["text"] for d in BATCH[::7]] + [d["text"] for d in EARLIER[::5]]
INCLUDE = ("--include", "tests.integration.saga_faults")


def write_jsonl(path: Path, items: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def corpus_state(name: str) -> tuple[Any, ...]:
    """What a user of the corpus sees: its documents (texts as given), and the exact
    answers to the probe queries; the index checked to be the store's projection."""
    corpus = get_corpus(name)
    answers = [
        [(m.id, round(m.score, 9)) for m in corpus.find_similar(p, limit=200, mode="exact").matches]
        for p in PROBES
    ]
    assert_consistent(corpus)
    return corpus.stats()["documents"], sorted(map(json.dumps, corpus.export())), answers


def brute_force(earlier: list[dict[str, str]], item: dict[str, str], threshold: float) -> set:
    scorer = get_scorer("ratio")
    query = normalise(item["text"])
    return {
        (d["id"], round(scorer(query, normalise(d["text"])) / 100.0, 6))
        for d in earlier
        if d["id"] != item["id"] and is_similar(scorer(query, normalise(d["text"])), threshold)
    }


def events_of(url: str, event_type: str) -> list[Any]:
    from redundancy.config import Settings
    from redundancy.events import parse_event
    from redundancy.events.wire import WireMessage

    streams = [keys.outbox(), keys.event_stream(Settings().events_topic)]
    found = [
        parse_event(WireMessage.from_fields(fields).body)
        for stream in streams
        for _, fields in redis.Redis.from_url(url).xrange(stream)
    ]
    return [e for e in found if e.event_type == event_type]


def wait_saga(name: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sagas = list_sagas(get_corpus(name))
        if sagas and sagas[0].state in ("completed", "compensated", "failed"):
            return sagas[0]
        time.sleep(0.3)
    raise TimeoutError(f"saga of {name} still {sagas[0].state if sagas else 'missing'}")


def test_batch_reports_the_corpus_matches_brute_force_finds_and_changes_nothing(
    redis_cluster, corpus_redis_url
):
    # Given a corpus of 40 documents and a batch with near-copies of some of them
    create_corpus("news", threshold=0.8, shards=4).index_documents(EARLIER)
    before = corpus_state("news")
    redis_cluster.start_worker(concurrency=2, CORPUS_REDIS_URL=corpus_redis_url)
    source = write_jsonl(redis_cluster.tmp / "batch.jsonl", BATCH)
    out = redis_cluster.tmp / "out.jsonl"

    # When the batch runs against the corpus in exact mode, in chunks across the worker
    run = redis_cluster.crd(
        "batch", str(source), "--corpus", "news", "--corpus-mode", "exact",
        "--corpus-limit", "100", "--out", str(out), "--json",
        CORPUS_REDIS_URL=corpus_redis_url, BATCH_CHUNK_SIZE=str(CHUNK),
    )  # fmt: skip

    # Then every item's matches are those brute force finds among the earlier documents
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    items = [json.loads(line) for line in out.read_text().splitlines()]
    items = {r["id"]: r for r in items if r["record"] == "item"}
    total = 0
    for item in BATCH:
        expected = brute_force(EARLIER, item, 0.8)
        got = {(m["id"], round(m["score"], 6)) for m in items[item["id"]]["corpus_matches"]}
        assert got == expected, item["id"]
        total += len(expected)
    assert total >= 10  # the batch does have near-copies of earlier documents
    assert summary["corpus"]["matches"] == total
    assert summary["corpus"]["saga"] is None
    # and the corpus is exactly as it was
    assert corpus_state("news") == before
    assert list_sagas(get_corpus("news")) == []


def test_a_saga_whose_seventh_step_fails_for_good_leaves_the_corpus_as_before(
    redis_cluster, corpus_redis_url
):
    # Given a corpus, and a worker whose 7th saga step (step 6) fails half-applied on
    # every attempt (its corpus writes fail after the first shard's)
    create_corpus("news", threshold=0.8, shards=4).index_documents(EARLIER)
    before = corpus_state("news")
    events_before = get_corpus("news").stats()["events"]
    redis_cluster.start_worker(
        2, INCLUDE, CORPUS_REDIS_URL=corpus_redis_url, CRD_TEST_SAGA_FAIL_STEP="6",
        TASK_MAX_RETRIES="1",
    )  # fmt: skip
    source = write_jsonl(redis_cluster.tmp / "batch.jsonl", BATCH)

    # When the batch is added to the corpus
    run = redis_cluster.crd(
        "batch", str(source), "--corpus", "news", "--add", "--json",
        CORPUS_REDIS_URL=corpus_redis_url, BATCH_CHUNK_SIZE=str(CHUNK),
    )  # fmt: skip

    # Then the batch is reported not added: its saga was compensated
    assert run.returncode == 1, run.stderr
    saga = json.loads(run.stdout)["corpus"]["saga"]
    assert saga["state"] == "compensated" and saga["steps_total"] == 9
    assert "step 6" in saga["cause"] and "injected fault" in saga["cause"]
    assert "not added" in run.stderr
    # and the corpus is exactly as before: documents (replaced ones with their old
    # texts), and the answers to every probe query
    assert corpus_state("news") == before
    # the compensation went through the corpus's commands: the store recorded it
    assert get_corpus("news").stats()["events"] > events_before
    # and batch.failed names the cause
    [failed] = events_of(redis_cluster.backend_url, "batch.failed")
    assert failed.payload.saga_id == saga["saga_id"] == failed.payload.batch_id
    assert failed.payload.failed_step == 6 and "injected fault" in failed.payload.cause
    assert failed.payload.compensated_steps == 7  # steps 0-5 and the half-applied step 6
    # and the jobs list shows it
    jobs = redis_cluster.crd("corpus", "jobs", "news", "--json", CORPUS_REDIS_URL=corpus_redis_url)
    [job] = json.loads(jobs.stdout)
    assert (job["state"], job["steps_done"], job["failed_step"]) == ("compensated", 0, 6)


@pytest.mark.parametrize("corpus_redis_url", ["redis"], indirect=True)
def test_a_compensation_that_fails_for_good_is_resumed_by_hand(redis_cluster, corpus_redis_url):
    # Given a worker whose step 6 fails for good, and whose compensation fails too
    create_corpus("news", threshold=0.8, shards=4).index_documents(EARLIER)
    before = corpus_state("news")
    redis_cluster.start_worker(
        2, INCLUDE, CORPUS_REDIS_URL=corpus_redis_url, CRD_TEST_SAGA_FAIL_STEP="6",
        CRD_TEST_SAGA_FAIL_COMPENSATION="1", TASK_MAX_RETRIES="1",
    )  # fmt: skip
    source = write_jsonl(redis_cluster.tmp / "batch.jsonl", BATCH)
    env = {"CORPUS_REDIS_URL": corpus_redis_url, "BATCH_CHUNK_SIZE": str(CHUNK)}

    # When the batch is added
    run = redis_cluster.crd("batch", str(source), "--corpus", "news", "--add", "--json", **env)

    # Then the saga is failed, half undone, naming the command that resumes it
    assert run.returncode == 1, run.stderr
    saga = json.loads(run.stdout)["corpus"]["saga"]
    assert saga["state"] == "failed" and "compensation did not finish" in saga["cause"]
    resume = f"crd corpus jobs news --compensate {saga['saga_id']}"
    assert resume in saga["cause"]
    assert corpus_state("news") != before
    assert redis.Redis.from_url(corpus_redis_url).get(keys.corpus_saga_lease("news"))
    # and once that command is run, the corpus is as before and the lease free
    resumed = redis_cluster.crd(*resume.split()[1:], **env)
    assert resumed.returncode == 0 and "compensated" in resumed.stdout, resumed.stderr
    assert corpus_state("news") == before
    assert redis.Redis.from_url(corpus_redis_url).get(keys.corpus_saga_lease("news")) is None
    [job] = json.loads(redis_cluster.crd("corpus", "jobs", "news", "--json", **env).stdout)
    assert job["state"] == "compensated"


@pytest.mark.parametrize("corpus_redis_url", ["redis"], indirect=True)
def test_a_worker_killed_mid_saga_the_saga_ends_complete_on_the_next_worker(
    rabbitmq_cluster, corpus_redis_url
):
    # Given a corpus, and a worker that stalls in the middle of step 3 (one shard written)
    create_corpus("news", threshold=0.8, shards=4).index_documents(EARLIER)
    signal = rabbitmq_cluster.tmp / "stalled"
    first = rabbitmq_cluster.start_worker(
        1, INCLUDE, CORPUS_REDIS_URL=corpus_redis_url, CRD_TEST_SAGA_SLOW_STEP="3",
        CRD_TEST_SAGA_SIGNAL=str(signal),
    )  # fmt: skip
    source = write_jsonl(rabbitmq_cluster.tmp / "batch.jsonl", BATCH)
    import subprocess
    import sys

    producer = subprocess.Popen(
        [sys.executable, "-m", "redundancy", "batch", str(source), "--corpus", "news", "--add",
         "--json"],
        env=rabbitmq_cluster.env(CORPUS_REDIS_URL=corpus_redis_url, BATCH_CHUNK_SIZE=str(CHUNK)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not signal.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert signal.exists(), first.text()
    # When the whole worker is SIGKILLed mid-step, half a chunk applied
    first.kill()
    [running] = list_sagas(get_corpus("news"))
    assert (running.state, running.steps_done) == ("running", 3)
    # and another worker (without the stall) starts
    rabbitmq_cluster.start_worker(1, CORPUS_REDIS_URL=corpus_redis_url)
    stdout, stderr = producer.communicate(timeout=300)

    # Then the step is redelivered, runs again and the saga completes: never half a batch
    assert producer.returncode == 0, stderr
    saga = json.loads(stdout)["corpus"]["saga"]
    assert (saga["state"], saga["steps_done"], saga["steps_total"]) == ("completed", 9, 9)
    assert (saga["added"], saga["replaced"]) == (85, 5)
    corpus = get_corpus("news")
    held = {d["id"]: d["text"] for d in corpus.export()}
    expected = {d["id"]: d["text"] for d in EARLIER} | {d["id"]: d["text"] for d in BATCH}
    assert held == expected
    assert_consistent(corpus)


@pytest.mark.parametrize("corpus_redis_url", ["redis"], indirect=True)
def test_bad_input_and_a_busy_corpus_change_nothing(redis_cluster, corpus_redis_url, tmp_path):
    # Given a corpus (minimum 0.8) and a worker
    create_corpus("news", threshold=0.8, shards=4).index_documents(EARLIER)
    before = corpus_state("news")
    redis_cluster.start_worker(2, CORPUS_REDIS_URL=corpus_redis_url)
    env = {"CORPUS_REDIS_URL": corpus_redis_url, "BATCH_CHUNK_SIZE": str(CHUNK)}
    good = write_jsonl(tmp_path / "good.jsonl", BATCH[:20])
    empty = write_jsonl(tmp_path / "empty.jsonl", [*BATCH[:20], {"id": "e", "text": "  "}])

    def batch(path: Path, *args: str) -> Any:
        return redis_cluster.crd("batch", str(path), "--json", *args, **env)

    # When bad options are given, they are refused with a clear error (usage: exit 2)
    unknown = batch(good, "--corpus", "nope", "--add")
    assert unknown.returncode == 2 and "unknown corpus 'nope'" in unknown.stderr
    low = batch(good, "--corpus", "news", "--add", "--threshold", "0.7")
    assert low.returncode == 2 and "below the minimum of corpus 'news'" in low.stderr
    # and a batch with an empty text is refused whole (exit 1), naming the item
    blank = batch(empty, "--corpus", "news", "--add")
    assert blank.returncode == 1 and "item 20" in blank.stderr
    assert "nothing was added" in blank.stderr
    # and while another saga holds the corpus, a batch to add fails at once
    lease = keys.corpus_saga_lease("news")
    redis.Redis.from_url(corpus_redis_url).set(lease, "another-saga")
    busy = batch(good, "--corpus", "news", "--add")
    assert busy.returncode == 1
    saga = json.loads(busy.stdout)["corpus"]["saga"]
    assert saga["state"] == "failed" and "saga another-saga" in saga["cause"]
    redis.Redis.from_url(corpus_redis_url).delete(lease)

    # Then nothing changed, and the jobs list shows only the refused saga
    assert corpus_state("news") == before
    jobs = redis_cluster.crd("corpus", "jobs", "news", **env)
    assert jobs.returncode == 0
    assert jobs.stdout.count("\n") == 1 and "\tfailed\t0/2 steps" in jobs.stdout
    # and a good batch is then added, and listed as completed
    added = batch(good, "--corpus", "news", "--add")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["corpus"]["saga"]["state"] == "completed"
    listed = json.loads(redis_cluster.crd("corpus", "jobs", "news", "--json", **env).stdout)
    assert [j["state"] for j in listed] == ["completed", "failed"]


# --- the embedded default: the same saga in-process, the corpus in real Redis -----------


@pytest.mark.parametrize("corpus_redis_url", ["redis"], indirect=True)
def test_embedded_default_adds_all_or_nothing_in_process(corpus_redis_url, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from redundancy.batch.runner import run_batch
    from redundancy.cli.inputs import InputItem
    from redundancy.config import get_settings
    from redundancy.corpus.service import Corpus
    from redundancy.errors import InvalidInputError

    monkeypatch.setenv("BATCH_CHUNK_SIZE", str(CHUNK))
    get_settings.cache_clear()
    assert get_settings().embedded
    create_corpus("news", threshold=0.8, shards=4).index_documents(EARLIER)
    before = corpus_state("news")
    inputs = [InputItem(d["id"], d["text"]) for d in BATCH[:40]]

    # Given an unreadable input among them: the batch is refused whole, nothing added
    with pytest.raises(InvalidInputError, match="could not be read"):
        run_batch([*inputs, InputItem("x", None, "binary")], threshold=0.8, algorithm="ratio",
                  corpus="news", add=True)  # fmt: skip
    assert corpus_state("news") == before

    # Given the corpus's 9th write (in the 3rd step) failing (a fault in this process)
    original, writes = Corpus._write, []

    def failing(self, shard, entries):
        writes.append(shard)
        if len(writes) == 9:
            raise RedisConnectionError("injected fault: corpus Redis down")
        return original(self, shard, entries)

    monkeypatch.setattr(Corpus, "_write", failing)
    # When the batch is added, it fails, and is compensated in-process
    result = run_batch(inputs, threshold=0.8, algorithm="ratio", corpus="news", add=True)
    monkeypatch.setattr(Corpus, "_write", original)
    saga = result.corpus.saga
    assert saga.state == "compensated" and "step 2: ConnectionError: injected" in saga.cause
    assert len(writes) > 9  # the compensation's writes came after the fault
    # and the corpus is as before
    assert corpus_state("news") == before

    # And once the fault is gone the same batch is added whole
    added = run_batch(inputs, threshold=0.8, algorithm="ratio", corpus="news", add=True)
    assert (added.corpus.saga.state, added.corpus.saga.added) == ("completed", 38)
    assert [s.state for s in list_sagas(get_corpus("news"))] == ["completed", "compensated"]
