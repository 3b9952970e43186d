"""Indexed search spread over a real worker: same pairs as in-process, every phase shared."""

from __future__ import annotations

import json
import re

import pytest
from benchmarks.corpora import synthetic_corpus

from redundancy.core import near_duplicates

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PHASES = ("analyze_chunk", "lsh_sign", "lsh_bucket", "lsh_verify")


def test_indexed_batch_of_5000_documents_over_two_processes_matches_in_process(
    redis_cluster, tmp_path
):
    # Given 5,000 documents (10% edited copies) in a JSONL file, and a worker with 2
    # pool processes taking chunks of 500 documents
    corpus = synthetic_corpus(5000, seed=21, copy_share=0.1, edit_share=0.05)
    source = tmp_path / "corpus.jsonl"
    with source.open("w", encoding="utf-8") as fh:
        for doc_id, text in zip(corpus.ids, corpus.texts, strict=True):
            fh.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    worker = redis_cluster.start_worker(concurrency=2, BATCH_CHUNK_SIZE="500")
    out = tmp_path / "out.jsonl"

    # When `crd batch --mode indexed` streams it to the cluster
    proc = redis_cluster.crd(
        "batch",
        str(source),
        "--mode",
        "indexed",
        "--json",
        "--out",
        str(out),
        "--no-progress",
        "--timeout",
        "400",
        timeout=450,
        BATCH_CHUNK_SIZE="500",
    )

    # Then the pairs and clusters equal the in-process indexed search
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    expected = near_duplicates(corpus.texts, 0.8, ids=corpus.ids, mode="indexed")
    assert result["mode"] == "indexed" and result["document_count"] == 5000
    assert len(expected.pairs) > 400
    assert [(p["a"], p["b"], p["score"]) for p in result["pairs"]] == [
        (p.a, p.b, p.score) for p in expected.pairs
    ]
    assert result["clusters"] == expected.clusters
    # and every phase ran as its own tasks, shared by both pool processes
    log = worker.text()
    for phase in PHASES:
        assert f"Task redundancy.batch.{phase}[" in log, phase
    assert log.count("Task redundancy.batch.lsh_verify[") >= 10  # received + succeeded lines
    processes = set(re.findall(r"ForkPoolWorker-(\d+)\] Task redundancy\.batch\.lsh_", log))
    assert len(processes) == 2
    # and the output file lists every pair and cluster
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["record"] == "pair" for r in records) == len(expected.pairs)
    assert sum(r["record"] == "cluster" for r in records) == len(expected.clusters)
    # and nothing of the batch is left in Redis (documents, progress, LSH tables)
    import redis

    left = list(
        redis.Redis.from_url(redis_cluster.backend_url).scan_iter(
            match=f"redundancy:batch:v1:{result['batch_id']}:*"
        )
    )
    assert left == []
