"""What the worst inputs of each size cost in the core, next to the hard time limit a
worker gives a message of that size (``redundancy.workers.budget``, default settings).

    python -m benchmarks.worst_case [--cap 120]

Each case runs ``analyze`` or ``similarity`` in a fresh process on one core (as a pool
process does), killed after ``--cap`` seconds (reported as ``> cap``). Cases: many
distinct 60-character sentences (the sentence search's quadratic worst case), one
sentence of that size, ``partial_ratio`` analyses of 600-character sentences, and
comparisons with ``ratio``, ``token_set_ratio`` and ``partial_ratio``. ``within_budget``
says whether a worker would let the case finish. Results:
``benchmarks/results/worst_case.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from redundancy.config import load_settings
from redundancy.workers.budget import time_limits

RUN = """
import json, sys, time
from redundancy.core import analyze, similarity
kind, algorithm, path = sys.argv[1:4]
texts = json.loads(open(path).read())
started = time.perf_counter()
if kind == "analyze":
    analyze(texts[0], 0.8, algorithm=algorithm, max_chars=10**7, workers=1)
else:
    similarity(texts[0], texts[1], algorithm, 0.8, max_chars=10**7)
print(time.perf_counter() - started)
"""


def words(count: int, seed: int) -> str:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    return " ".join(rng.choices(vocab, k=count))


def sentences(chars: int, length: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    vocab = [f"word{i}" for i in range(3000)]
    out, total = [], 0
    while total < chars:
        sentence = " ".join(rng.choices(vocab, k=max(1, length // 7))).capitalize() + "."
        out.append(sentence)
        total += len(sentence) + 1
    return " ".join(out)[:chars]


def cases() -> list[tuple[str, str, str, list[str]]]:
    """(name, kind, algorithm, texts)."""
    out = []
    for chars in (10_000, 100_000, 300_000, 1_000_000):
        out.append((f"analyze ratio, 60-char sentences, {chars:,}", "analyze", "ratio",
                    [sentences(chars, 60)]))  # fmt: skip
    for chars in (100_000, 1_000_000):
        out.append((f"analyze ratio, one sentence, {chars:,}", "analyze", "ratio",
                    [words(chars // 6, 2)]))  # fmt: skip
    for chars in (10_000, 30_000):
        out.append((f"analyze partial_ratio, 600-char sentences, {chars:,}", "analyze",
                    "partial_ratio", [sentences(chars, 600)]))  # fmt: skip
    for chars in (10_000, 30_000, 300_000):
        pair = [words(chars // 12, 3), words(chars // 12, 4)]
        for algorithm in ("ratio", "token_set_ratio", "partial_ratio"):
            out.append((f"compare {algorithm}, {chars:,}", "compare", algorithm, pair))
    return out


def run(kind: str, algorithm: str, texts: list[str], cap: float, folder: Path) -> float | None:
    path = folder / "input.json"
    path.write_text(json.dumps(texts))
    try:
        done = subprocess.run(
            [sys.executable, "-c", RUN, kind, algorithm, str(path)],
            capture_output=True,
            text=True,
            timeout=cap,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return None
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cap", type=float, default=120.0, help="seconds before a case is killed")
    opts = parser.parse_args()
    settings = load_settings()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, algorithm, texts in cases():
            chars = sum(len(t) for t in texts)
            hard, _ = time_limits(chars, settings)
            seconds = run(kind, algorithm, texts, opts.cap, Path(tmp))
            row = {
                "case": name,
                "input_chars": chars,
                "seconds": None if seconds is None else round(seconds, 3),
                "killed_after_cap": seconds is None,
                "hard_limit_s": hard,
                "within_budget": seconds is not None and seconds < hard,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_result(
        "worst_case",
        {
            "what": "core cost of worst inputs per size vs the worker's hard limit for them",
            "cap_s": opts.cap,
            "budget": {
                "task_time_base_s": settings.task_time_base,
                "task_time_per_mchar_s": settings.task_time_per_mchar,
                "task_time_limit_s": settings.task_time_limit,
            },
            "cases": rows,
        },
    )


if __name__ == "__main__":
    main()
