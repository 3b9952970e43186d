"""The README's "HTTP API" curl walk-through, run verbatim with bash against a real
``crd serve`` and a real worker (only the port of ``API=`` differs: a free one)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.api_support import api_env, api_servers
from tests.services import ROOT, require

pytestmark = pytest.mark.integration


def walkthrough() -> str:
    """The ``sh`` block of the README's HTTP API section that starts with the key."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## HTTP API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    found = [b for b in blocks if b.startswith("KEY=$(crd keys create")]
    assert len(found) == 1, "the README's HTTP API walk-through block is missing"
    return found[0]


def json_objects(text: str) -> list[dict]:
    """The JSON objects in ``text``, in order (curl prints answers without newlines)."""
    decoder, found, at = json.JSONDecoder(), [], text.find("{")
    while at != -1:
        value, end = decoder.raw_decode(text, at)
        found.append(value)
        at = text.find("{", end)
    return found


def test_the_readme_http_api_walkthrough_runs_as_written(redis_cluster, tmp_path: Path):
    require(shutil.which("curl") is not None, "curl")
    script = walkthrough()
    assert "API=http://127.0.0.1:8000" in script
    # Given a worker and the API, and a folder holding the README's example files
    # (the README exports REDIS_URL for both; corpora live there)
    redis_cluster.start_worker(2, CORPUS_REDIS_URL=api_env(tmp_path)["REDIS_URL"])
    work = tmp_path / "walk"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    with api_servers(redis_cluster) as (api,):
        env = redis_cluster.env(**api_env(tmp_path))
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # When the block runs in bash, stopping at the first failing command
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script.replace(":8000", f":{api.port}")],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    # Then every step succeeded and printed what the README says it does
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert '"redundancy_score":0.5' in out.replace(" ", "")  # step 1: inline result
    assert "event: progress" in out and "event: completed" in out  # step 3: SSE
    assert '"job_id"' in out and '"kind":"batch"' in out.replace(" ", "")  # step 4
    assert '"user_id":"ana"' in out.replace(" ", "")  # step 5: logged in
    lower = out.lower()
    assert "ratelimit-remaining:" in lower and "x-correlation-id: walkthrough-1" in lower
    batch = json.loads((work / "batch.json").read_text())
    files = len(list((ROOT / "examples/corpus/news").iterdir()))
    assert batch["state"] == "succeeded" and batch["result"]["document_count"] == files
    page = (work / "report.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html")
    # step 7: the corpus, its indexing job answered inline, the query's copies, the check
    compact = out.replace(" ", "")
    assert '"name":"news"' in compact and '"kind":"indexing"' in compact
    assert f'"indexed":{files}' in compact
    answers = json_objects(out[out.lower().index("x-correlation-id: walkthrough-1") :])
    assert [a.get("name") for a in answers[:1]] == ["news"]
    (query,) = [a for a in answers if "candidates" in a]
    found = [m["id"] for m in query["matches"]]
    assert found[0] == "riverside-library-reopens-original.txt" and len(found) > 1
    assert all(name.startswith("riverside-library-reopens-") for name in found)
    (check,) = [a for a in answers if "action" in a]
    assert check["action"] == "indexed" and check["matches"] == []
    assert answers[-1]["corpus"] == "news" and answers[-1]["documents"] == files + 1
