"""Peak memory of ``crd batch`` over 10,000 documents on the embedded default.

    python -m benchmarks.batch_memory [--docs 10000] [--chars 400] [--modes auto,exact]

``auto`` picks indexed search at this size; ``exact`` is the quadratic path.

Peak RSS is the child's ``ru_maxrss``. Baseline in the same run: the same command over
10 documents (interpreter, imports, Celery app), so the difference is what the batch adds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import synthetic_docs, write_result


def peak_rss_mib(path: Path, mode: str = "auto") -> tuple[float, float, int]:
    """(peak MiB, seconds, exit code) of one ``crd batch`` run in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_"))}
    code = (
        "import resource, subprocess, sys\n"
        f"p = subprocess.run([sys.executable, '-m', 'redundancy', 'batch', {str(path)!r}, "
        f"'--json', '--no-progress', '--mode', {mode!r}], stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)\n"
    )
    began = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - began
    kib, rc = out.stdout.split()
    return int(kib) / 1024, seconds, int(rc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--chars", type=int, default=400)
    parser.add_argument("--modes", default="auto,exact", help="search modes to measure")
    args = parser.parse_args()
    assert resource  # used in the child
    with tempfile.TemporaryDirectory() as tmp:
        docs = synthetic_docs(args.docs, args.chars, seed=2)
        big, small = Path(tmp, "big.jsonl"), Path(tmp, "small.jsonl")
        for path, subset in ((big, docs), (small, docs[:10])):
            with path.open("w") as fh:
                for n, text in enumerate(subset):
                    fh.write(json.dumps({"id": f"doc-{n}", "text": text}) + "\n")
        base_mib, base_s, _ = peak_rss_mib(small)
        runs = {}
        for mode in args.modes.split(","):
            peak_mib, seconds, rc = peak_rss_mib(big, mode)
            runs[mode] = {"peak_rss_mib": peak_mib, "seconds": seconds, "exit_code": rc,
                          "added_by_batch_mib": peak_mib - base_mib}  # fmt: skip
    write_result(
        "batch_memory",
        {
            "documents": args.docs,
            "chars_per_doc": args.chars,
            "input_mib": sum(map(len, docs)) / 2**20,
            "run_on": "embedded default",
            "search_modes": runs,
            "baseline_10_docs": {"peak_rss_mib": base_mib, "seconds": base_s},
            "aim_below_mib": 1024,
        },
    )
    sys.exit(0 if all(r["peak_rss_mib"] < 1024 for r in runs.values()) else 1)


if __name__ == "__main__":
    main()
