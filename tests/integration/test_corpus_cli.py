"""``crd corpus`` end to end (embedded default: tasks in-process, corpus in real Redis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import ROOT, is_service_setting

pytestmark = pytest.mark.integration

SAMPLE = ROOT / "examples" / "corpus"


def crd(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not is_service_setting(k)}
    env.update(CORPUS_REDIS_URL=url, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "redundancy", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("corpus_redis_url", ["redis"], indirect=True)
def test_the_corpus_commands_from_create_to_drop(corpus_redis_url: str, tmp_path: Path):
    url = corpus_redis_url
    # create, and create again (a usage error)
    made = crd(url, "corpus", "create", "docs", "--shards", "3")
    assert made.returncode == 0 and "3 shards, 51 bands x 5 rows, redis event store" in made.stdout
    again = crd(url, "corpus", "create", "docs")
    assert again.returncode == 2 and "exists already" in again.stderr
    # add the sample folder plus two inputs that cannot be indexed
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "binary.bin").write_bytes(b"\x00\x01")
    added = crd(url, "corpus", "add", "docs", str(SAMPLE), str(tmp_path), "--json")
    assert added.returncode == 3, added.stderr
    summary = json.loads(added.stdout)
    documents = sum(1 for p in SAMPLE.rglob("*") if p.is_file())
    assert (summary["indexed"], summary["skipped"]) == (documents, 2)
    assert {Path(s["id"]).name for s in summary["skipped_items"]} == {"empty.txt", "binary.bin"}
    # adding the folder again changes nothing
    readd = crd(url, "corpus", "add", "docs", str(SAMPLE))
    assert readd.returncode == 0 and f"0 indexed, 0 replaced, {documents} unchanged" in readd.stdout
    # query with a document of the folder: it is its own best match
    sample = next(p for p in sorted(SAMPLE.rglob("*")) if p.is_file())
    found = crd(url, "corpus", "query", "docs", str(sample), "--json")
    assert found.returncode == 0, found.stderr
    matches = json.loads(found.stdout)["matches"]
    assert matches[0]["score"] == 1.0 and matches[0]["id"].endswith(sample.name)
    exact = crd(url, "corpus", "query", "docs", "-", "--mode", "exact", stdin=sample.read_text())
    assert exact.returncode == 0 and "1.0000" in exact.stdout
    # bad arguments: exit 2 with one line
    low = crd(url, "corpus", "query", "docs", str(sample), "--threshold", "0.5")
    assert low.returncode == 2 and "outside [0.8, 1.0]" in low.stderr
    unknown = crd(url, "corpus", "stats", "nope")
    assert unknown.returncode == 2 and "unknown corpus 'nope' (corpora: docs)" in unknown.stderr
    # stats and export replay what was added
    stats = json.loads(crd(url, "corpus", "stats", "docs", "--json").stdout)
    assert stats["documents"] == stats["events"] == documents
    out = tmp_path / "export.jsonl"
    assert crd(url, "corpus", "export", "docs", "--out", str(out)).returncode == 0
    exported = {d["id"]: d["text"] for d in map(json.loads, out.read_text().splitlines())}
    assert len(exported) == documents
    assert exported[matches[0]["id"]] == sample.read_text()
    # remove, rebuild, list, drop
    gone = crd(url, "corpus", "remove", "docs", matches[0]["id"], "no-such-id")
    assert gone.returncode == 0 and "1 removed, 1 not there" in gone.stdout
    rebuilt = crd(url, "corpus", "rebuild", "docs")
    assert rebuilt.returncode == 0 and f"{documents - 1} documents" in rebuilt.stdout
    assert crd(url, "corpus", "list").stdout.startswith("docs\tthreshold 0.8\tratio\t3 shards")
    assert crd(url, "corpus", "drop", "docs", "--yes").returncode == 0
    assert crd(url, "corpus", "list").stdout == ""
    assert crd(url, "corpus", "stats", "docs").returncode == 2
