"""The crd command on the embedded default (no servers)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from redundancy.cli import EXIT_ITEMS_FAILED, EXIT_USAGE, cli
from redundancy.cli.inputs import read_inputs

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "corpus"


@pytest.fixture
def runner():
    return CliRunner()


def test_batch_on_the_sample_corpus_finds_its_known_near_duplicates(runner, tmp_path):
    out = tmp_path / "result.jsonl"
    result = runner.invoke(cli, ["batch", str(CORPUS), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "embedded default" in result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    items = [r for r in records if r["record"] == "item"]
    pairs = {(r["id_a"], r["id_b"]) for r in records if r["record"] == "pair"}
    assert len(items) == len(list(CORPUS.rglob("*.txt")))
    # pairs documented in examples/CORPUS.md
    assert ("scripture/psalm-23-kjv.txt", "scripture/psalm-23-webster-1833.txt") in pairs
    # the byte-identical pair and the case/whitespace pair are duplicate groups
    groups = [r["ids"] for r in records if r["record"] == "group"]
    assert len(groups) == 2
    assert [
        "notes/new-hire-onboarding-checklist.txt",
        "notes/onboarding-checklist-final.txt",
    ] in groups
    assert not [r for r in records if r["record"] == "pair" and r["exact"]]


def test_batch_csv_lists_pairs_with_clusters(runner, tmp_path):
    out = tmp_path / "pairs.csv"
    result = runner.invoke(cli, ["batch", str(CORPUS / "policies"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert rows and list(rows[0]) == [
        "id_a", "id_b", "score", "exact", "cluster", "copies_a", "copies_b"
    ]  # fmt: skip
    assert all(float(r["score"]) >= 0.8 for r in rows)


def test_batch_reports_unreadable_and_invalid_items_and_exits_3(runner, tmp_path):
    (tmp_path / "good.txt").write_text("A fine sentence. A fine sentence.")
    (tmp_path / "empty.txt").write_text("   ")
    (tmp_path / "binary.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    result = runner.invoke(cli, ["batch", str(tmp_path), "--json"])
    assert result.exit_code == EXIT_ITEMS_FAILED
    data = json.loads(result.output)
    errors = {i["id"]: i["error"]["message"] for i in data["items"] if i["error"]}
    assert set(errors) == {"empty.txt", "binary.bin", "latin1.txt"}
    assert "not UTF-8" in errors["latin1.txt"] and "binary" in errors["binary.bin"]
    assert data["succeeded"] == 1 and data["failed"] == 3


def test_jsonl_input_with_bad_lines(runner, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text(
        json.dumps({"id": "a", "text": "Hello there, friend."})
        + "\n"
        + "not json\n"
        + json.dumps({"id": "b", "text": "hello there, friend!"})
        + "\n"
        + json.dumps({"id": "c"})
        + "\n"
    )
    result = runner.invoke(cli, ["batch", str(src), "--json", "--threshold", "0.9"])
    assert result.exit_code == EXIT_ITEMS_FAILED
    data = json.loads(result.output)
    assert [(p["id_a"], p["id_b"]) for p in data["pairs"]] == [("a", "b")]
    assert {i["id"] for i in data["items"] if i["error"]} == {f"{src}:2", f"{src}:4"}


def test_ids_stay_unique_with_several_folders(tmp_path):
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "same.txt").write_text("text")
    ids = [i.id for i in read_inputs([str(tmp_path / "one"), str(tmp_path / "two")])]
    assert len(set(ids)) == 2


def test_analyze_and_compare_print_json(runner, tmp_path):
    result = runner.invoke(cli, ["analyze", "-"], input="The cat sat. The cat sat.")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["redundancy_score"] == 0.5
    result = runner.invoke(cli, ["compare", "--text", "hello world", "Hello World", "-a", "WRatio"])
    assert json.loads(result.output)["similarity_score"] == 1.0
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one two three")
    b.write_text("one two four")
    assert json.loads(runner.invoke(cli, ["compare", str(a), str(b)]).output)["is_similar"] is False


def test_analyze_invalid_input_is_one_clear_line(runner):
    result = runner.invoke(cli, ["analyze", "-"], input="  ")
    assert result.exit_code == 1
    assert "EmptyTextError: text is empty or whitespace only" in result.output


def test_worker_refuses_without_a_broker(runner):
    result = runner.invoke(cli, ["worker"])
    assert result.exit_code == EXIT_USAGE
    assert "CELERY_BROKER_URL is not set" in result.output


@pytest.mark.parametrize(
    ("command", "needed_by"),
    [
        (["worker"], "a worker needs a broker"),
        (["flower", "--no-auth"], "Flower watches the workers of a broker"),
        (["events", "relay", "--drain"], "the embedded default relays inline"),
    ],
)
def test_what_only_a_cluster_runs_refuses_the_embedded_default_alike(runner, command, needed_by):
    # Given no Celery broker (the embedded default)
    # When a command that only a cluster runs is started
    result = runner.invoke(cli, command)
    # Then it stops as a usage error, naming the variable and why it is needed
    assert result.exit_code == EXIT_USAGE
    assert f"CELERY_BROKER_URL is not set: {needed_by}" in " ".join(result.output.split())


def test_doctor_on_the_embedded_default(runner):
    result = runner.invoke(cli, ["doctor"])
    assert result.exit_code == 0
    assert "embedded default" in result.output


def test_doctor_shows_no_cluster_only_check_on_the_embedded_default(runner, settings_env):
    # Given the embedded default, though a result backend's Redis is configured
    settings_env(REDIS_URL="redis://127.0.0.1:1/0")
    # When the doctor runs
    result = runner.invoke(cli, ["doctor"])
    # Then it checks no broker, result backend, workers or outbox: there are none to check
    shown = [line[2:].split("  ")[0] for line in result.output.splitlines() if line[:1] in "✓✗"]
    assert shown == ["settings", "mode", "cache", "sessions", "event broker"]


def test_bad_threshold_is_a_usage_error(runner):
    result = runner.invoke(cli, ["batch", str(CORPUS), "--threshold", "2"])
    assert result.exit_code == 2


def test_importing_the_cli_loads_no_metrics_library():
    # `crd worker` must set up Prometheus' multiprocess folder before prometheus_client is
    # first imported; the CLI's own imports must therefore never pull it in.
    import subprocess
    import sys

    code = "import sys, redundancy.cli; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_jsonl_line_that_is_not_utf8_is_a_failed_item(runner, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_bytes(
        json.dumps({"id": "a", "text": "fine"}).encode() + b"\n"
        + b'{"id": "b", "text": "caf\xe9"}\n'
    )  # fmt: skip
    result = runner.invoke(cli, ["batch", str(src), "--json"])
    assert result.exit_code == EXIT_ITEMS_FAILED
    data = json.loads(result.output)
    failed = {i["id"]: i["error"]["message"] for i in data["items"] if i["error"]}
    assert list(failed) == [f"{src}:2"] and "not UTF-8" in failed[f"{src}:2"]
