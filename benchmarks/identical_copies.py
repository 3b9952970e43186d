"""Identical documents: memory, time and output size of a batch of N copies of one text.

    python -m benchmarks.identical_copies [--copies 2000,10000] [--python PATH]

Real corpora are full of blank and template pages. Each run is a fresh child process
(peak RSS is its own ``ru_maxrss``; ``--cap-mib`` limits its address space so a
quadratic run fails instead of exhausting the machine):

* ``crd batch copies.jsonl --json --out out.jsonl`` on the embedded default;
* ``near_duplicates(texts)`` in-process.

Baseline in the same run, what a user would do instead to find identical texts: a plain
``dict`` from ``hashlib.sha256`` of the text to its ids, over the same JSONL file.
``--python`` runs the children with another interpreter (e.g. an older checkout's venv,
to measure before and after a change).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_result

TEXT = "This page intentionally left blank. Please turn over for the next section."

RUN = """
import resource, subprocess, sys, time
cap = int(sys.argv[1]) * 2**20
def limit():
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
began = time.perf_counter()
p = subprocess.run(sys.argv[2:], stdout=open("stdout.txt", "wb"), stderr=subprocess.DEVNULL,
                   preexec_fn=limit)
print(time.perf_counter() - began, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
      p.returncode)
"""

NEAR_DUPLICATES = """
import json, sys
from redundancy.core import near_duplicates
texts = [json.loads(line)["text"] for line in open(sys.argv[1])]
result = near_duplicates(texts, 0.8)
print(len(result.model_dump_json()))
"""

PLAIN_GROUPS = """
import hashlib, json, sys
groups = {}
for line in open(sys.argv[1]):
    record = json.loads(line)
    groups.setdefault(hashlib.sha256(record["text"].encode()).hexdigest(), []).append(record["id"])
out = json.dumps([ids for ids in groups.values() if len(ids) > 1])
print(len(out))
"""


def measure(python: str, argv: list[str], cwd: Path, cap_mib: int) -> dict[str, Any]:
    """Seconds, peak RSS and exit code of ``python argv`` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_"))}
    out = subprocess.run(
        [sys.executable, "-c", RUN, str(cap_mib), python, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, kib, rc = out.stdout.split()
    stdout = (cwd / "stdout.txt").read_bytes()
    return {
        "seconds": round(float(seconds), 3),
        "peak_rss_mib": round(int(kib) / 1024, 1),
        "exit_code": int(rc),
        "stdout_bytes": len(stdout),
        "stdout_first_line": stdout.split(b"\n", 1)[0][:80].decode(errors="replace"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", default="2000,10000")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the runs")
    parser.add_argument("--cap-mib", type=int, default=8192, help="address-space cap per run")
    parser.add_argument("--name", default="identical_copies", help="result file name")
    args = parser.parse_args()
    runs = []
    for copies in (int(c) for c in args.copies.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            source = cwd / "copies.jsonl"
            with source.open("w") as fh:
                for n in range(copies):
                    fh.write(json.dumps({"id": f"page-{n}", "text": TEXT}) + "\n")
            out = cwd / "out.jsonl"
            crd = [
                "-m", "redundancy", "batch", str(source), "--json", "--no-progress",
                "--out", str(out),
            ]  # fmt: skip
            batch = measure(args.python, crd, cwd, args.cap_mib)
            batch["out_bytes"] = out.stat().st_size if out.exists() else None
            batch["stdout_first_line"] = None  # the JSON result; its size is stdout_bytes
            near = measure(args.python, ["-c", NEAR_DUPLICATES, str(source)], cwd, args.cap_mib)
            plain = measure(sys.executable, ["-c", PLAIN_GROUPS, str(source)], cwd, args.cap_mib)
        runs.append(
            {
                "copies": copies,
                "crd_batch": batch,
                "near_duplicates": near,
                "baseline_plain_sha256_dict": plain,
                "near_duplicates_vs_baseline": {
                    "time_ratio": round(near["seconds"] / plain["seconds"], 2),
                    "peak_rss_ratio": round(near["peak_rss_mib"] / plain["peak_rss_mib"], 2),
                },
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    write_result(
        args.name,
        {
            "python": args.python,
            "text": TEXT,
            "cap_mib": args.cap_mib,
            "started": time.strftime("%H:%M:%S"),
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
